"""Decoder models: the NNX transformer, its presets, and sharding rules."""

from ugrad.models.sharding import BATCH_AXES
from ugrad.models.sharding import MESH_AXES
from ugrad.models.sharding import RULES
from ugrad.models.sharding import make_mesh
from ugrad.models.sharding import mesh_shape
from ugrad.models.sharding import param_shardings
from ugrad.models.model_config import ATTENTION
from ugrad.models.model_config import REMAT
from ugrad.models.model_config import ModelConfig
from ugrad.models.model_config import PRESETS
from ugrad.models.model_config import preset
from ugrad.models.transformer import KVCache
from ugrad.models.transformer import REMAT_POLICIES
from ugrad.models.transformer import ScalarModel
from ugrad.models.transformer import Transformer
from ugrad.models.transformer import init_cache
from ugrad.models.logprobs import token_logprobs
from ugrad.models.hf import from_pretrained
from ugrad.models.hf import save_pretrained
from ugrad.models.hf_tokenizer import HFTokenizer
from ugrad.models.chat_template import ChatTemplate
from ugrad.models.chat_template import encode_chat

__all__ = [
    "BATCH_AXES",
    "MESH_AXES",
    "RULES",
    "make_mesh",
    "mesh_shape",
    "param_shardings",
    "ATTENTION",
    "ModelConfig",
    "PRESETS",
    "preset",
    "KVCache",
    "REMAT",
    "REMAT_POLICIES",
    "ScalarModel",
    "Transformer",
    "init_cache",
    "token_logprobs",
    "from_pretrained",
    "save_pretrained",
    "HFTokenizer",
    "ChatTemplate",
    "encode_chat",
]
