"""Settings shared by every config; a paper setting overrides what differs."""
import ml_collections

from configs import data_defaults


def get_model_config() -> ml_collections.ConfigDict:
    """bLVNet-TAM-50, 8x2 frames (16 input frames), as in the paper."""
    return ml_collections.ConfigDict(dict(
        name="blvnet_tam",      # blvnet_tam | blvnet | blvnet_tsm | tsn | tsm | tsn_tam
        depth=50,               # 50 | 101 | 152
        alpha=2,                # channel ratio big / little branch
        beta=4,                 # block ratio big / little branch
        num_frames=16,          # all input frames of a clip: 16 for "8x2"
        blending_frames=3,      # TAM kernel size r (odd)
        num_classes=174,
        dropout=0.5,            # > 0: dropout + `new_fc` head (official); 0: plain `fc` head
        width=64,               # channels of the stem (64 in the paper)
        input_channels=3,       # 3 for RGB, 10 for 5 stacked optical-flow pairs
        dtype="float32",        # compute dtype: float32 | bfloat16 (parameters stay float32)
        remat=False,            # recompute each stage's activations in the backward pass (long clips)
        pointwise_as_dot=True,  # 1x1 convolutions as dot products (fast on XLA:CPU); same values
        recompute_stem=True,    # bLVNet stem recomputed in the backward pass (less memory); same values
    ))


def get_config() -> ml_collections.ConfigDict:
    """The paper's recipe: SGD + Nesterov 0.9, weight decay 5e-4, lr 0.01 cosine, batch 64, 50 epochs."""
    config = ml_collections.ConfigDict()
    config.model = get_model_config()
    config.data = data_defaults.get_data_config()
    config.seed = 0
    config.batch_size = 64              # global, over all devices and hosts
    config.eval_batch_size = 16         # videos per evaluation batch (each has crops x clips views)
    config.num_epochs = 50.0
    config.num_train_steps = -1         # > 0 overrides num_epochs
    config.learning_rate = 0.01         # 0.005 when fine-tuning on Kinetics / Moments
    config.lr_schedule = "cosine"       # cosine | multistep (x lr_decay_factor at lr_decay_epochs)
    config.lr_decay_epochs = (10.0, 20.0)
    config.lr_decay_factor = 0.1
    config.warmup_epochs = 0.0
    config.momentum = 0.9               # Nesterov, as the official code
    config.weight_decay = 5e-4
    config.grad_clip_norm = 0.0         # > 0: clip the global gradient norm
    config.label_smoothing = 0.0
    config.skip_nonfinite_steps = False  # True: a NaN/inf step is skipped and counted, not fatal
    config.grad_accumulation_steps = 1  # > 1: one update every this many batches
    config.mesh_shape = (-1, 1)         # devices as (data, frames); frames > 1 splits each clip's frames
    config.log_every_steps = 50
    config.eval_every_steps = 0         # 0: at the end of every epoch
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3         # the latest few, plus the best by eval top-1
    config.init_from = ""               # a workdir of ours (e.g. 8x2 -> 16x2, or a converted ImageNet bLResNet)
    config.allow_recipe_change = False  # True: resume although the recipe differs (blvnet_jax/recipe.py); recorded
    return config
