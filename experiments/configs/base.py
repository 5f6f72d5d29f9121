"""Defaults shared by every study preset; a preset changes only what differs."""

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder


def get_config() -> ConfigDict:
    c = ConfigDict()
    c.encodings = ("nope", "sinusoidal", "learned", "normalized", "integer")
    # Hyperparameters per encoding name, e.g. {"rope": {"base": 500000.0}}.
    c.encoding_kwargs = ConfigDict({})
    # Study names for registered encodings with other hyperparameters:
    # {"randomized_rope": "randomized"} plus encoding_kwargs["randomized_rope"] = {...}.
    c.encoding_variants = ConfigDict({})
    # Study names for models whose layers follow a schedule of posenc_jax.models.schedules:
    # {"rope_nope_hybrid": {"schedule": "smollm3", "base": 10000.0}} (the model-wide
    # encoding, which chooses positions, is NoPE unless the entry gives "encoding").
    c.encoding_schedules = ConfigDict({})
    c.tasks = ("copy",)
    c.task_kwargs = ConfigDict({})
    c.seeds = (0, 1)
    c.train_length = 8
    # Each training example's length is drawn uniformly from [min_train_length, N]
    # (Delétang et al. 2023, Ruoss et al. 2023: 1..N); train_length trains at N only.
    c.min_train_length = 1
    # Evaluated at train_length times each multiplier (N, 2N, 4N, 8N) ...
    c.eval_multipliers = (1, 2, 4, 8)
    # ... and at every length from N to this multiple of N ([N, 2N], the NoPE paper's
    # test range); 0 for the multipliers only.
    c.eval_every_length_to = 2
    # Evaluation batches of lengths up to this multiple of N are padded to its width and
    # share one compiled program (0: every length at its own width).
    c.eval_pad_to = 2
    c.eval_examples = 128
    c.eval_batch_size = 64
    # Decoder tasks: also generate the answer greedily with a key/value cache.
    c.greedy_decoding = True
    # ... at lengths up to this multiple of N (0: every evaluated length). The NoPE score
    # reads (N, 2N]; greedy decoding is sequential, the slowest part of an evaluation.
    c.greedy_decoding_to = 0

    # Language-model cells (task char_lm; experiments/lm_study.py): the corpus and how its
    # held-out text is scored in bits per character.
    c.lm = ConfigDict()
    # A text file, "python_docs" (offline: the documentation topics every CPython ships)
    # or a TFDS name ("tiny_shakespeare"; "lm1b" with validation_split="test").
    c.lm.corpus = "python_docs"
    c.lm.validation_fraction = 0.1  # a file or python_docs: share held out, from the end
    c.lm.validation_split = "validation"  # a TFDS name: its held-out split
    c.lm.data_dir = ""  # where TFDS prepares the corpus ("": its default)
    c.lm.eval_characters = 0  # score the first this many held-out characters (0: all)
    c.lm.num_buckets = 8  # bits per character per equal-width bucket of window position
    # Also score sliding windows starting every this many characters (Press et al.
    # 2022, Appendix B); 0: non-overlapping windows only.
    c.lm.sliding_stride = 0
    # Also decode the non-overlapping windows token by token with StreamingLLM's cache
    # (Xiao et al. 2024): each window's first streaming_sinks characters and its
    # streaming_recent latest, positions counted inside the cache; sinks + recent <=
    # train_length. Rows gain streaming_* keys. 0 recent: no streaming pass.
    c.lm.streaming_sinks = 4
    c.lm.streaming_recent = 0
    # ... over the first this many held-out characters only (0: all): decoding is
    # sequential, one step per character of a window.
    c.lm.streaming_characters = 8192

    c.model = ConfigDict()
    c.model.d_model = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.num_kv_heads = 0  # 0: as many as num_heads
    c.model.mlp_dim = 256
    c.model.dtype = "float32"

    c.batch_size = 32
    c.optimizer = ConfigDict()
    c.optimizer.learning_rate = 1e-3
    c.optimizer.total_steps = 600
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.01
    c.optimizer.clip_norm = 1.0

    c.log_every = 100
    c.checkpoint_every = 0
    # When a cell's checkpoints all fail to restore: move them aside and train that cell
    # again (True), or stop with UnusableCheckpointError (False).
    c.start_fresh_if_unusable = False

    # A multi-host job (posenc_jax.train.distributed.join_job): every process runs the same
    # command. Leave the three unset on Cloud TPU, SLURM or Open MPI (JAX detects the job),
    # or for a single process; elsewhere give all three.
    c.distributed = ConfigDict()
    c.distributed.coordinator_address = ""  # host:port of process 0
    c.distributed.num_processes = placeholder(int)
    c.distributed.process_id = placeholder(int)
    # Seconds without a heartbeat after which a process counts as dead and the others stop.
    c.distributed.heartbeat_timeout = 100
    c.distributed.initialization_timeout = 300  # seconds to wait for every process
    # "i/n": this job runs shard i of the cells split over n independent jobs
    # (experiments/cell_shards.py); "" runs every cell.
    c.cell_shard = ""
    # JAX's persistent compilation cache: a re-run, a resumed cell, and cells whose
    # programs coincide (the evaluation of one encoding on two tasks with one vocabulary)
    # load compiled programs instead of compiling them. "" keeps none; the environment
    # variable JAX_COMPILATION_CACHE_DIR, when set, wins.
    c.compilation_cache_dir = "~/.cache/posenc_jax/jax"
    return c
