"""Write the reference tables of tests/experiment/test_default_adapters.py: the tidy results of the demo
preset and of a small digits run, on one thread, with the fast paths of issue 15. (The digits table of
commit c148f82, before the adapter seam, is kept as reference_digits_c148f82.csv.)

    .venv/bin/python tests/experiment/data/make_reference.py demo digits
"""

import sys

import torch


def main(names: list[str]) -> None:
    from preadapt import run
    from preadapt.experiment.presets import preset_data

    torch.set_num_threads(1)
    for name in names:
        data = preset_data(name)
        data["device"], data["threads"] = "cpu", 1
        if name == "digits":
            data["pretrain"].update(tuples=2000, epochs=1, checkpoints=[0, 8])
            data["evaluate"]["samples"] = 2000
        frame = run(data).results.drop(columns=["run"])
        frame.to_csv(f"tests/experiment/data/reference_{name}.csv", index=False, float_format="%.17g")
        print(name, len(frame))


if __name__ == "__main__":
    main(sys.argv[1:])
