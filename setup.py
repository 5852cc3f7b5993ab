"""ugrad: one unified loss for post-training language models in JAX."""

import setuptools

setuptools.setup(
    name="ugrad",
    version="0.1.0",
    description=(
        "A JAX framework for LLM post-training where every method is one"
        " gradient coefficient fed to one unified loss."
    ),
    packages=setuptools.find_packages(include=["ugrad", "ugrad.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7.0",
        "flax>=0.11.0",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.0",
        "etils[epath]>=1.7",
        "chex>=0.1.89",
        "absl-py>=2.1.0",
        "ml_collections>=1.0.0",
        "numpy>=1.26",
        "safetensors>=0.4.3",
        "tokenizers>=0.19",
        # Chat templates (ugrad/models/chat_template.py); 3.1.6 fixes
        # sandbox escapes, and templates come from model hubs.
        "jinja2>=3.1.6",
        "math-verify>=0.7.0",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        # JAX's compilation cache locks its directory with it
        # (ugrad/runtime/compile_cache.py).
        "filelock>=3.12",
        "matplotlib>=3.8",
        # A QLoRA base's int8 / nf4 quantizers (ugrad/models/quantize.py).
        "qwix>=0.1.8",
    ],
    extras_require={
        # torch and transformers are only ever used by tests and the
        # benchmark, as an independent reference implementation.
        "test": [
            "pytest>=8.0",
            # -n: the suite in parallel worker processes (README, Tests).
            "pytest-xdist>=3.5",
            "torch>=2.2",
            "transformers>=4.45",
            # The PEFT export's round trip (experiments/export.py).
            "peft>=0.13",
            # The plan test compiles for a TPU topology on the CPU; libtpu
            # has Linux x86-64 wheels only (elsewhere that test skips).
            "jax[tpu]>=0.10; sys_platform == 'linux' and "
            "platform_machine == 'x86_64'",
        ],
        # Formatter, linter and git hooks: pyproject.toml and
        # .pre-commit-config.yaml hold their settings.
        "dev": [
            # .ci/run pins the same versions: a formatter's output changes
            # between releases.
            "pyink==26.5.1",
            "pylint==4.1.5",
            "pre-commit>=3.0",
        ],
        # experiments/perf/benchmark.py --grpo: the peers it times ugrad
        # against.
        # google-tunix 0.1.7 installs beside jax 0.10 (it pulls
        # transformers 5.12 through its tokenizers pin).
        "bench": [
            "torch>=2.2",
            "transformers>=4.45",
            "datasets>=4.0",
            "trl==1.16.*",
            "google-tunix==0.1.7",
        ],
        # experiments/plan.py: compiling for Cloud TPU topologies on any
        # machine (jax[tpu] pins the libtpu of its jax version).
        "plan": [
            "jax[tpu]>=0.10",
        ],
        # Running on accelerators: `pip install -e '.[tpu]'` on a Cloud TPU
        # VM, `pip install -e '.[cuda]'` on an NVIDIA GPU host (JAX's
        # default CUDA; `jax[cuda12]` for a driver older than CUDA 13).
        "tpu": [
            "jax[tpu]>=0.10",
        ],
        "cuda": [
            "jax[cuda]>=0.10",
        ],
    },
)
