"""A small bLVNet-TAM on the built-in synthetic dataset, for a laptop CPU.

    python main.py --config=configs/demo.py --workdir=/tmp/blvnet_demo

The dataset (generated on first use, a few seconds) has pairs of classes that are each other's
time reversal (moving right / left, down / up, growing / shrinking, ...): only a model that sees
frame order separates them. `--config.model.name=tsn` gives the order-blind baseline.
"""
from configs import base


def get_config():
    config = base.get_config()
    config.model.update(dict(width=16, num_frames=8, num_classes=8, dropout=0.2))
    config.data.source = "synthetic"
    config.data.crop_size = 64
    config.data.flip = False  # a flip turns "moving right" into "moving left"
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_epochs = 24.0
    config.learning_rate = 0.05
    config.warmup_epochs = 1.0
    config.weight_decay = 1e-4
    config.log_every_steps = 20
    config.checkpoint_every_steps = 100
    return config
