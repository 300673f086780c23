"""The real data sets of the ``finite`` world: Fashion-MNIST and WordNet's glosses.

On the installed files (Debian's dataset-fashion-mnist and wordnet-base; skipped, naming the package,
where they are absent): shapes, class counts, stratified split sizes, determinism under the seed, the
vocabulary of the training split only (against a loop-based reference), and tiny runs. On files written
here (no package needed): a missing or corrupt file is one line naming the file and the package, and
the command line exits 2 with nothing written.
"""

import collections
import dataclasses
import gzip

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from command_line import cli
from preadapt import run
from preadapt.encoders import ENCODERS
from preadapt.experiment.config import ConfigError, parse_config
from preadapt.worlds import SPLITS, WORLDS, FiniteWorld, FiniteWorldConfig, split_assignment, wordnet_glosses
from preadapt.worlds.datasets import (FASHION_MNIST, SOURCES, WORDNET, DatasetError, gloss_definition,
                                      load_fashion_mnist, tokenize, wordnet_corpus)
from preadapt.worlds.finite import split_counts
from preadapt.worlds.sampling import make_generator


def _absent(name):
    source = SOURCES[name]
    try:
        source.stamp()
    except DatasetError as error:
        return (f"needs the Debian package {source.package} (apt-get install {source.package}; `make test` "
                f"installs it where it runs as root): {error}")
    return None


needs_fashion = pytest.mark.skipif(_absent("fashion_mnist") is not None, reason=str(_absent("fashion_mnist")))
needs_wordnet = pytest.mark.skipif(_absent("wordnet") is not None, reason=str(_absent("wordnet")))

EVALUATE = {"samples": 600, "mean_samples": 60, "test_per_class": 12, "task_classes": [2, 3], "top_r": [1, 2],
            "probe_tasks": 4, "probe_shots": 10, "probe_val": 10, "star_samples": 30, "bootstrap": 10}
PRETRAIN = {"tuples": 256, "epochs": 1, "batch_size": 128, "checkpoints": [0]}


def _world(seed=0, **fields):
    """The world of a run with this seed (the generator a run seeds: ``make_generator(seed, "world")``)."""
    return WORLDS.build(WORLDS.parse({"kind": "finite", **fields}), make_generator(seed, "world"))


def _split_sizes(world):
    return np.stack([world.split_world(name).counts for name in SPLITS], axis=1)  # (C, 3)


# ------------------------------------------------------------------ Fashion-MNIST, installed files


@needs_fashion
def test_fashion_mnist_is_70000_images_in_10_balanced_classes():
    images, labels = load_fashion_mnist()
    assert images.shape == (70000, 1, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (70000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [7000] * 10
    assert np.bincount(labels[:60000]).tolist() == [6000] * 10  # the train file, then t10k's 1000 each
    assert images.max() == 255 and images.min() == 0
    assert load_fashion_mnist()[0] is images  # parsed once per process


@needs_fashion
def test_fashion_mnist_world_samples_pixels_in_0_1_with_a_stratified_split():
    world = _world(dataset="fashion_mnist")
    config = WORLDS.parse({"kind": "finite", "dataset": "fashion_mnist"})
    assert world.classes == config.classes == 10 and world.input_shape == config.input_spec.shape == (1, 28, 28)
    assert _split_sizes(world).tolist() == [[4900, 700, 1400]] * 10  # 7000 per class × [0.7, 0.1, 0.2]
    assert np.allclose(world.prior, 0.1)
    train = world.split_world("train")
    ids = train.sample_ids(torch.arange(10).repeat(3), torch.Generator().manual_seed(0))
    x = train.take(ids)
    images, labels = load_fashion_mnist()
    assert x.dtype == torch.float32 and x.shape == (30, 1, 28, 28)
    assert torch.allclose(x, torch.from_numpy(images[ids.numpy()].astype(np.float32) / 255), atol=1e-7, rtol=0)
    assert (labels[ids.numpy()] == np.tile(np.arange(10), 3)).all()  # drawn within the class asked for
    assert (world.assignment[ids.numpy()] == 0).all()  # from the train split
    assert world.features.dtype == torch.uint8  # stored small, converted as sampled


@needs_fashion
def test_fashion_mnist_split_is_fixed_by_the_seed():
    a, b, c = _world(0, dataset="fashion_mnist"), _world(0, dataset="fashion_mnist"), _world(1, dataset="fashion_mnist")
    assert np.array_equal(a.assignment, b.assignment) and not np.array_equal(a.assignment, c.assignment)
    assert _split_sizes(c).tolist() == _split_sizes(a).tolist()


@pytest.mark.slow
@needs_fashion
def test_a_tiny_cnn_run_on_fashion_mnist_finishes():
    result = run({"name": "fashion", "device": "cpu", "threads": 1,
                  "world": {"kind": "finite", "dataset": "fashion_mnist"},
                  "encoder": {"kind": "cnn", "widths": [4], "out_dim": 4},
                  "pretrain": PRETRAIN, "evaluate": EVALUATE})
    assert result.status == "finished", result.error
    assert {"L_un", "L_sup", "acc_avg"} <= set(result.results.quantity)


# ------------------------------------------------------------------ WordNet, installed files


@needs_wordnet
def test_wordnet_has_one_gloss_per_synset_in_45_unequal_classes():
    texts, labels = wordnet_glosses()
    assert len(texts) == labels.size > 100_000  # 117,659 synsets in WordNet 3.0
    sizes = np.bincount(labels)
    assert sizes.size == 45 and sizes.min() > 0 and sizes.max() > 100 * sizes.min()  # very unequal
    assert all(text and '"' not in text for text in texts)  # definitions, the quoted examples dropped
    world = _world(dataset="wordnet")
    assert world.classes == 45 and world.features.shape == (labels.size, 32)
    assert _split_sizes(world).tolist() == split_counts(sizes, [0.7, 0.1, 0.2]).tolist()
    assert np.allclose(world.prior, world.counts / world.counts.sum())


@needs_wordnet
def test_wordnet_tokens_follow_a_reference_vocabulary_of_the_training_split():
    texts, labels = wordnet_glosses()
    world = _world(dataset="wordnet", vocab=300, length=8)
    assert world.input_shape == (8,) and world.features.max() < 300
    train = world.assignment == 0
    counts = collections.Counter(word for text, keep in zip(texts, train) if keep for word in tokenize(text))
    reference = ["<pad>", "<unk>", *sorted(counts, key=lambda word: (-counts[word], word))[:298]]
    assert world.words == reference
    ids = {word: i for i, word in enumerate(reference)}
    for i in np.random.default_rng(0).choice(labels.size, 200, replace=False):
        words = tokenize(texts[i])[:8]
        row = [ids.get(word, 1) for word in words] + [0] * (8 - len(words))
        assert world.features[i].tolist() == row, texts[i]
    x = world.split_world("test").sample(torch.arange(45), torch.Generator().manual_seed(0))
    assert x.dtype == torch.int64 and x.shape == (45, 8)
    for encoder in ({"kind": "bow", "vocab": 300}, {"kind": "gru", "vocab": 300}):  # both take the ids as they are
        model = ENCODERS.build(ENCODERS.parse({**encoder, "out_dim": 3}), world.input_shape, torch.Generator().manual_seed(0))
        assert model(x).shape == (45, 3)


@needs_wordnet
def test_a_word_seen_only_outside_the_training_split_is_unknown():
    texts, _ = wordnet_glosses()
    world = _world(dataset="wordnet", vocab=100_000)  # room for every training word
    seen = {word for text, part in zip(texts, world.assignment) if part == 0 for word in tokenize(text)}
    unseen = [(i, word) for i, part in enumerate(world.assignment) if part == 2
              for word in tokenize(texts[i])[:32] if word not in seen]
    assert unseen
    assert set(world.words[2:]) == seen
    for i, word in unseen[:50]:
        assert world.features[i, tokenize(texts[i]).index(word)] == 1


@needs_wordnet
def test_wordnet_split_is_fixed_by_the_seed_and_shared_with_a_world_of_other_features():
    a, b, c = _world(0, dataset="wordnet"), _world(0, dataset="wordnet"), _world(1, dataset="wordnet")
    assert np.array_equal(a.assignment, b.assignment) and torch.equal(a.features, b.features)
    assert not np.array_equal(a.assignment, c.assignment) and a.words != c.words
    texts, labels = wordnet_glosses()
    features = np.zeros((len(texts), 2), dtype=np.float32)  # e.g. a frozen model's features of the texts
    other = FiniteWorld.from_arrays(features, labels, [0.7, 0.1, 0.2], make_generator(0, "world"))
    assert np.array_equal(other.assignment, a.assignment)
    assert np.array_equal(split_assignment(labels, [0.7, 0.1, 0.2], make_generator(0, "world")), a.assignment)


@needs_wordnet
def test_tiny_bow_run_on_wordnet_finishes():
    result = run({"name": "glosses", "device": "cpu", "threads": 1,
                  "world": {"kind": "finite", "dataset": "wordnet", "vocab": 500, "length": 16},
                  "encoder": {"kind": "bow", "vocab": 500, "embed_dim": 8, "out_dim": 4},
                  "pretrain": PRETRAIN, "evaluate": EVALUATE})
    assert result.status == "finished", result.error


# ------------------------------------------------------------------ config fields


def test_wordnet_fields_are_refused_on_another_data_set_and_left_out_of_its_dump():
    with pytest.raises(ValidationError, match="length: got 16; it applies to dataset wordnet only, and dataset is digits"):
        FiniteWorldConfig(dataset="digits", length=16)
    with pytest.raises(ConfigError, match=r"^world\.vocab: got 300; it applies to dataset wordnet only"):
        parse_config({"world": {"kind": "finite", "dataset": "digits", "vocab": 300}})
    digits = FiniteWorldConfig(dataset="digits", vocab=5000)  # the default value: accepted
    assert "vocab" not in digits.model_dump() and "length" not in digits.model_dump()
    assert FiniteWorldConfig.model_validate(digits.model_dump()) == digits


@needs_wordnet
def test_wordnet_config_round_trips_and_states_its_inputs():
    config = WORLDS.parse({"kind": "finite", "dataset": "wordnet", "vocab": 800, "length": 12})
    assert config.model_dump()["vocab"] == 800 and WORLDS.parse(config.model_dump()) == config
    spec = config.input_spec
    assert spec.shape == (12,) and spec.dtype == torch.int64 and spec.vocabulary == 800 and config.classes == 45
    with pytest.raises(ConfigError, match=r"encoder\.vocab: got 100; allowed: ≥ 800"):
        parse_config({"world": config.model_dump(), "encoder": {"kind": "bow", "vocab": 100}})


# ------------------------------------------------------------------ missing and corrupt files (no package needed)


def _idx(shape, fill=0, magic_dims=None):
    dims = len(shape) if magic_dims is None else magic_dims
    header = bytes([0, 0, 8, dims]) + b"".join(int(n).to_bytes(4, "big") for n in shape)
    return header + bytes([fill]) * int(np.prod(shape))


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # the same bytes in every process (pytest-xdist compares test ids)


def _fashion_folder(folder, first: bytes):
    """The four Fashion-MNIST files, the first (train images, read first) ``first``, the others stubs."""
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(FASHION_MNIST.files):
        (folder / name).write_bytes(first if i == 0 else _gzip(_idx((1,))))
    return folder


def _crc_broken(data: bytes) -> bytes:
    packed = bytearray(_gzip(data))
    packed[-8] ^= 0xFF  # the CRC-32 of the trailer
    return bytes(packed)


SPELLED = "abcdefghij"


def _wordnet_folder(folder, per_class=10):
    """A small WordNet in its data-file format (wndb(5WN)): ``per_class`` synsets in each of the 45
    lexicographer files, every line starting with its own byte offset, after a license header."""
    folder.mkdir(exist_ok=True)
    files = {"data.noun": ("n", range(3, 29)), "data.verb": ("v", range(29, 44)), "data.adj": ("a", [0, 1, 44]),
             "data.adv": ("r", [2])}
    for name, (ss_type, classes) in files.items():
        text = "  1 This software and database is being provided to you\n  2  \n"
        for lex in classes:
            code = "".join(SPELLED[int(d)] for d in f"{lex:02d}")
            for i in range(per_class):
                text += (f"{len(text.encode()):08d} {lex:02d} {ss_type} 01 thing{i} 0 000 | a kind {code} of "
                         f"thing {SPELLED[i % 10]}; \"an example\"  \n")
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def data_env(monkeypatch):
    """Each data set's files are looked for in folders the test writes."""
    def point(name, folder):
        monkeypatch.setenv(SOURCES[name].variable, str(folder))
        return folder
    return point


def test_a_written_wordnet_reads_as_45_classes(tmp_path, data_env):
    data_env("wordnet", _wordnet_folder(tmp_path / "wn"))
    texts, labels = wordnet_glosses()
    assert len(texts) == 450 and np.bincount(labels).tolist() == [10] * 45
    assert texts[0] == "a kind ad of thing a" and gloss_definition('x; "y"') == "x"  # noun.act is 03
    world = _world(dataset="wordnet", vocab=20, length=4)
    assert world.words[:4] == ["<pad>", "<unk>", "a", "kind"] and world.features.shape == (450, 4)
    corpus, _ = wordnet_corpus()
    assert len(corpus) == 450


@pytest.mark.parametrize("first, problem", [
    (b"not gzip", "it is not a whole gzip file (Not a gzipped file (b'no'))"),
    (_gzip(_idx((60000, 28, 28)))[:200], "it is not a whole gzip file (Compressed file ended before the "
                                                 "end-of-stream marker was reached)"),
    (_crc_broken(_idx((3, 28, 28))), "it is not a whole gzip file (CRC check failed"),
    (_gzip(_idx((60000,), magic_dims=1)), "its magic number is 0x00000801; expected 0x00000803 (IDX "
                                                  "unsigned bytes in 3 dimensions)"),
    (_gzip(_idx((60000, 28, 28))[:1000]), "it holds 984 bytes after the header; the header's sizes "
                                                  "(60000, 28, 28) need 47040000"),
    (_gzip(_idx((2, 28, 28))), "it holds an array of shape (2, 28, 28); expected (60000, 28, 28)"),
], ids=["not gzip", "cut short", "bad crc", "bad magic", "bad size", "bad count"])
def test_a_corrupt_fashion_mnist_file_is_one_line_naming_it_and_the_package(tmp_path, data_env, first, problem):
    folder = data_env("fashion_mnist", _fashion_folder(tmp_path / "fm", first))
    with pytest.raises(DatasetError) as raised:
        load_fashion_mnist()
    message = str(raised.value)
    assert message.startswith(f"dataset: fashion_mnist needs {folder / 'train-images-idx3-ubyte.gz'} (in the "
                              f"directory PREADAPT_DATA_FASHION_MNIST names; the Debian package "
                              f"dataset-fashion-mnist installs it in /usr/share/datasets/fashion-mnist); "), message
    assert problem in message and "\n" not in message


@pytest.mark.parametrize("damage, problem", [
    (lambda text: text.replace(" 03 n 01 thing1 ", " 03 n 01  thing1 ", 1), "line 5 is not a synset line at byte offset"),
    (lambda text: text.replace("| a kind ad of thing b", "a kind ad of thing b", 1), "line 4 is not a synset line"),
    (lambda text: text.replace(" 03 n 01 thing1 ", " 45 n 01 thing1 ", 1), "LEX_FILENUM 00..44"),
    (lambda text: text.replace(" 03 n 01 thing1 ", " 03 v 01 thing1 ", 1), "line 4 is not a synset line"),
    (lambda text: text[:-40], "it does not end with a line break (cut short?)"),
    (lambda text: text[:text.index("\n") + 1], "it holds no synset line"),
], ids=["offsets shifted", "no gloss bar", "lex 45", "verb in nouns", "cut short", "no synsets"])
def test_a_corrupt_wordnet_file_is_one_line_naming_it_and_the_package(tmp_path, data_env, damage, problem):
    folder = data_env("wordnet", _wordnet_folder(tmp_path / "wn"))
    noun = folder / "data.noun"
    noun.write_text(damage(noun.read_text()))
    with pytest.raises(DatasetError) as raised:
        wordnet_glosses()
    message = str(raised.value)
    assert message.startswith(f"dataset: wordnet needs {noun} (in the directory PREADAPT_DATA_WORDNET names; the "
                              f"Debian package wordnet-base installs it in /usr/share/wordnet); "), message
    assert problem in message and "\n" not in message


def test_a_wordnet_without_some_lexicographer_file_is_refused(tmp_path, data_env):
    folder = data_env("wordnet", _wordnet_folder(tmp_path / "wn"))
    (folder / "data.adv").write_text("  1 header only\n")
    with pytest.raises(DatasetError, match="data.adv .*; it holds no synset line"):
        wordnet_glosses()
    _wordnet_folder(folder)
    adverbs = (folder / "data.adv").read_text()
    (folder / "data.adv").write_text(adverbs.replace(" 02 r ", " 01 r "))  # offsets unchanged
    with pytest.raises(DatasetError, match=r"no synset is in lexicographer file 02; expected all 45$"):
        wordnet_glosses()


def test_a_missing_file_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("PREADAPT_TEST_UNSET", raising=False)
    source = dataclasses.replace(FASHION_MNIST, default=str(tmp_path), variable="PREADAPT_TEST_UNSET")
    with pytest.raises(DatasetError) as raised:
        source.stamp()
    assert str(raised.value) == (f"dataset: fashion_mnist needs {tmp_path / 'train-images-idx3-ubyte.gz'} (Debian "
                                 f"package dataset-fashion-mnist: apt-get install dataset-fashion-mnist); it is missing")
    corrupt = source.problem(tmp_path / "data", "its magic number is 0x00000000")
    assert "(Debian package dataset-fashion-mnist: apt-get install --reinstall dataset-fashion-mnist)" in str(corrupt)
    wordnet = dataclasses.replace(WORDNET, default=str(tmp_path), variable="PREADAPT_TEST_UNSET")
    with pytest.raises(DatasetError, match=r"data\.noun \(Debian package wordnet-base: apt-get install wordnet-base\); "
                                           r"it is missing$"):
        wordnet.stamp()


def test_a_missing_or_corrupt_file_fails_validation_in_one_line(tmp_path, data_env):
    data_env("fashion_mnist", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"^world\.dataset: fashion_mnist needs .*nowhere/train-images-idx3-ubyte\.gz "
                                          r"\(.*\); it is missing$"):
        parse_config({"world": {"kind": "finite", "dataset": "fashion_mnist"}, "encoder": {"kind": "cnn"}})
    data_env("wordnet", _wordnet_folder(tmp_path / "wn"))
    (tmp_path / "wn" / "data.verb").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"^world\.dataset: wordnet needs .*data\.verb .*cut short"):
        parse_config({"world": {"kind": "finite", "dataset": "wordnet"}, "encoder": {"kind": "bow", "vocab": 5000}})


def _preadapt_run(config, cwd, env):
    """``preadapt run config.yaml --out out`` in ``cwd`` with ``env``, through the command line's entry
    point in this process (``command_line.cli``: its exit status, stdout and stderr)."""
    (cwd / "config.yaml").write_text(yaml.safe_dump(config))
    return cli("run", "config.yaml", "--out", "out", cwd=cwd, env=env)


@pytest.mark.parametrize("case", ["fashion missing", "fashion bad magic", "wordnet cut"])
def test_the_command_line_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    data = tmp_path / "data"
    if case == "fashion missing":
        data.mkdir()
        world, encoder, variable = "fashion_mnist", {"kind": "cnn"}, "PREADAPT_DATA_FASHION_MNIST"
        message = f"world.dataset: fashion_mnist needs {data / 'train-images-idx3-ubyte.gz'} ("
    elif case == "fashion bad magic":
        _fashion_folder(data, _gzip(_idx((5,))))  # a labels file where the images belong
        world, encoder, variable = "fashion_mnist", {"kind": "cnn"}, "PREADAPT_DATA_FASHION_MNIST"
        message = "its magic number is 0x00000801; expected 0x00000803"
    else:
        _wordnet_folder(data)
        (data / "data.adj").write_text((data / "data.adj").read_text()[:-3])
        world, encoder, variable = "wordnet", {"kind": "bow", "vocab": 5000}, "PREADAPT_DATA_WORDNET"
        message = f"world.dataset: wordnet needs {data / 'data.adj'} ("
    work = tmp_path / "work"
    work.mkdir()
    result = _preadapt_run({"world": {"kind": "finite", "dataset": world}, "encoder": encoder}, work,
                           {variable: str(data)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in work.iterdir()) == ["config.yaml"]  # no out/, no runs/
