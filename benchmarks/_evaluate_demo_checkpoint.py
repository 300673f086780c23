"""One demo checkpoint's evaluation, timed (CPU seconds, one thread): the demo's world and encoder,
pretrained 790 steps as the demo preset does (timed after a first, untimed training), then ``evaluate``
three times; prints the training's time and the evaluations' median.
Run by before_after_issue15.py with the package of either commit on PYTHONPATH."""
import time, torch, sys
torch.set_num_threads(1)
import preadapt
from preadapt.experiment.presets import preset_data
from preadapt.experiment.run import evaluate
from preadapt.encoders import ENCODERS
from preadapt.objectives import OBJECTIVES
from preadapt.pretrain import PretrainConfig, pretrain
from preadapt.worlds import WORLDS, draw_tuples
from preadapt.worlds.sampling import make_generator
d = preset_data("demo")
world = WORLDS.build(WORLDS.parse(d["world"]), make_generator(0, "world"))
enc = ENCODERS.build(ENCODERS.parse(d["encoder"]), world.input_shape, make_generator(0, "encoder"))
obj = OBJECTIVES.build(OBJECTIVES.parse(d["objective"]))
tuples = draw_tuples(world, 20000, make_generator(0, "tuples"), negatives=1)
import copy
config = PretrainConfig(**{**d["pretrain"], "checkpoints": []})
pretrain(copy.deepcopy(enc), copy.deepcopy(obj), tuples, config, make_generator(0, "shuffle"))  # the one-off imports
t = time.process_time()
pretrain(enc, obj, tuples, config, make_generator(0, "shuffle"))
tp = time.process_time() - t
enc.eval()
ts = []
for r in range(3):
    t = time.process_time(); evaluate(enc, world, d["evaluate"], seed=0); ts.append(time.process_time() - t)
print(f"{tp:.3f} {sorted(ts)[1]:.3f}")
