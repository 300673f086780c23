import sys, torch
torch.set_num_threads(1)
from preadapt import run
from preadapt.experiment.presets import preset_data
for name in sys.argv[1:]:
    data = preset_data(name)
    data["device"] = "cpu"; data["threads"] = 1
    if name == "digits":
        data["pretrain"]["tuples"] = 2000; data["pretrain"]["epochs"] = 1; data["pretrain"]["checkpoints"] = [0, 8]
        data["evaluate"]["samples"] = 2000
    r = run(data)
    df = r.results.drop(columns=["run"])
    df.to_csv(f"tests/experiment/data/reference_{name}.csv", index=False, float_format="%.17g")
    print(name, len(df))
