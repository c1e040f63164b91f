"""Template: bLVNet-TAM-50 8x2 fine-tuned on your own videos, prepared by the video_folder builder.

    python -m input_pipeline.prepare_tfds --dataset=video_folder --manual_dir=my_videos --data_dir=data/tfds
    python main.py --config=configs/own_videos.py --workdir=runs/my_videos \\
        --config.data.tfds_data_dir=data/tfds --config.model.num_classes=N \\
        --config.init_from=runs/ssv2_8x2_official

`my_videos/{train,validation}/<class>/<video>` holds the videos; N is the number of classes
`prepare_tfds` prints (the sub-folders of `train`; a wrong N stops the run before anything is
built, naming the right one). `init_from` is a workdir of ours with bLVNet-TAM-50 weights of any
class count (its head is re-initialised): here the official Something-Something V2 8x2 checkpoint
converted with `python -m blvnet_jax.convert` (README, "Use a released checkpoint"), or ImageNet
bLResNet-50 weights converted the same way. The recipe is a starting point for a few thousand
videos, not a measured result: lr 0.001 at batch 16 (up to 0.0025 at batch 64), 15 epochs, cosine.
From scratch (`--config.init_from=`) use the paper's recipe instead (`configs/base.py`: lr 0.01 at
batch 64, 50 epochs).
"""
from configs import base


def get_config():
    config = base.get_config()
    config.model.num_classes = 10         # set to the classes prepare_tfds printed: --config.model.num_classes=N
    config.data.source = "tfds"
    config.data.tfds_name = "video_folder"
    config.data.tfds_data_dir = "data/tfds"  # placeholder: the --data_dir of input_pipeline.prepare_tfds
    config.data.flip = True               # False if class names say left / right
    config.init_from = "runs/ssv2_8x2_official"  # placeholder: a converted checkpoint ('' = from scratch)
    config.batch_size = 16
    config.eval_batch_size = 16
    config.learning_rate = 0.001
    config.num_epochs = 15.0
    config.warmup_epochs = 1.0
    config.log_every_steps = 20
    config.checkpoint_every_steps = 500
    return config
