"""The one typed configuration (pipeline.yaml) and the typed view of an Axolotl recipe.

Path rules: a path in pipeline.yaml is relative to that file's directory (the repository root for the shipped one);
a path given on the command line is relative to the working directory; a path in an Axolotl recipe is relative to
the repository root, where `make` and Axolotl run.
Every command loads the configuration once (`load_config`), applies its command-line overrides, and writes
`config.as_record()` into what it produces, so a result says how it was made.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, PrivateAttr, ValidationError

from contract.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PIPELINE = REPO_ROOT / "pipeline.yaml"
# What the Makefile exports for every stage: no hub, no telemetry (a crashed run with telemetry on hangs for
# minutes). Python that launches stages itself (tests, experiments/) passes the same.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1", "WANDB_MODE": "disabled",
               "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


def run_env() -> dict[str, str]:
    """The environment training runs with: telemetry always off; the Hub offline unless HF_HUB_OFFLINE says
    otherwise (the 27B downloads its weights with HF_HUB_OFFLINE=0, as the README and the Docker image set)."""
    return {**OFFLINE_ENV, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}


VARIANTS = ("tuned", "tuned+constrained", "base", "base+constrained")


def resolve(path: str | Path) -> Path:
    """The one path rule: relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def shown(path: Path) -> str:
    """A path as the user wrote it: relative to the repository root where it can be."""
    return str(path.relative_to(REPO_ROOT)) if path.is_absolute() and path.is_relative_to(REPO_ROOT) else str(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MergeOptions(Section):
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="precision of the saved model: auto = float32 for a model of at most 8 GiB in float32 "
        "(the 270M), else bfloat16, its checkpoint's own (the 27B)")
    probes: PositiveInt = Field(4, description="eval examples the merge proof runs on")
    tolerance: PositiveFloat | None = Field(None, description="max |logit| difference allowed (default by dtype)")


class DecodingOptions(Section):
    """How every stage that answers queries decodes (evaluation, prediction, the GGUF parity check)."""

    batch_size: PositiveInt = Field(64, description="queries decoded at once")
    max_new_tokens: PositiveInt = Field(256, description="stop an answer after this many tokens")
    max_string_chars: PositiveInt = Field(
        64, description="constrained decoding: bound on free-text strings (the sample's longest value: 52)")
    max_items: PositiveInt = Field(8, description="constrained decoding: bound on arrays (the sample's longest: 6)")
    grounded: bool = Field(True, description="constrained decoding: values marked x-copy-from-query in the schema "
                           "may only be spans of the query")
    quantize: Literal["auto", "none", "nf4"] = Field(
        "auto", description="auto: 4-bit NF4 where the model would not fit the GPU in bf16 (the 27B on 24 GB); "
        "none: never; nf4: always")


class EvalOptions(Section):
    variants: list[Literal[VARIANTS]] = Field(  # type: ignore[valid-type]
        ["tuned", "tuned+constrained"], description=f"comma-separated, of {', '.join(VARIANTS)}")
    limit: PositiveInt | None = Field(None, description="only the first N examples")
    reports_dir: Path = Field(Path("reports"), description="reports go to <reports_dir>/<run>/")


class PredictOptions(Section):
    constrained: bool = Field(True, description="decode under the schema (--no-constrained to compare)")


class ExportOptions(Section):
    outtypes: list[Literal["f16", "bf16", "q8_0", "q4_k_m"]] = Field(
        ["f16", "q8_0"], description="GGUF files to write (comma-separated)")
    parity_examples: PositiveInt = Field(20, description="eval examples the GGUF parity check decodes")


class PipelineConfig(Section):
    recipe: Path = Field(Path("axolotl_configs/gemma3-270m-lora.yaml"),
                         description="the Axolotl recipe (CONFIG= in make)")
    raw_data: Path = Field(description="your hand-labeled records")
    schema_path: Path = Field(alias="schema", description="JSON Schema every record's data must satisfy")
    system_prompt: Path = Field(description="prompt template: {schema} and {labels} are filled from the schema")
    allow_prompt_without_schema: bool = Field(
        False, description="a template with neither {schema} nor {labels} is deliberate, not a mistake")
    main_label: str = Field(description="JSON pointer into data: the split is stratified on it")
    eval_fraction: float = Field(gt=0, lt=1, description="share of records held out for evaluation")
    seed: int = Field(description="seed of the split")
    merge: MergeOptions = MergeOptions()
    decoding: DecodingOptions = DecodingOptions()
    eval: EvalOptions = EvalOptions()
    predict: PredictOptions = PredictOptions()
    export: ExportOptions = ExportOptions()

    _root: Path = PrivateAttr(default=REPO_ROOT)  # the directory of the pipeline file this was read from

    def path(self, name: str) -> Path:
        """A path setting, resolved against the pipeline file's directory."""
        return self.locate(getattr(self, name))

    def locate(self, value: str | Path) -> Path:
        value = Path(value)
        return value if value.is_absolute() else self._root / value

    def as_record(self) -> dict[str, Any]:
        """What every output records of how it was made."""
        return self.model_dump(mode="json", by_alias=True)

    def as_settings(self) -> dict[str, Any]:
        """The settings with every path absolute: a pipeline.yaml written anywhere else reads the same files."""
        settings = self.as_record()
        for key in ("recipe", "raw_data", "schema", "system_prompt"):
            settings[key] = str(self.locate(settings[key]))
        settings["eval"]["reports_dir"] = str(self.locate(settings["eval"]["reports_dir"]))
        return settings


def _section_of(key: str) -> str | None:
    """The section of pipeline.yaml that has `key` (eval's decoding settings moved to `decoding:`)."""
    for name, field in PipelineConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) \
                and key in field.annotation.model_fields:
            return name
    return None


def _unknown_keys(raw: dict, model: type[BaseModel], prefix: str = "") -> list[str]:
    """`unknown key `eval.batch_sise` (did you mean `eval.batch_size`?)`, for every level of sections."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    problems = []
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            elsewhere = _section_of(str(key)) if prefix else None
            hint = (f" (did you mean `{prefix}{close[0]}`?)" if close else
                    f" (did you mean `{elsewhere}.{key}`?)" if elsewhere else "")
            problems.append(f"unknown key `{prefix}{key}`{hint}")
        elif isinstance(value, dict) and isinstance(fields[key].annotation, type) \
                and issubclass(fields[key].annotation, BaseModel):
            problems += _unknown_keys(value, fields[key].annotation, f"{prefix}{key}.")
    return problems


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """pipeline.yaml, validated (unknown keys and bad values are errors), with command-line overrides applied."""
    path = resolve(path or DEFAULT_PIPELINE)
    raw, duplicates = load_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{shown(path)}: must be a mapping of settings, found {type(raw).__name__}")
    problems = [f"duplicate key `{key}` (line {line}): YAML keeps only the last one" for key, line in duplicates]
    problems += _unknown_keys(raw, PipelineConfig)
    if not problems:
        try:
            config = PipelineConfig.model_validate(_merge(raw, overrides or {}))
            config._root = path.parent
            return config
        except ValidationError as err:
            problems = [f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}"
                        + (f" (got {e['input']!r})" if not isinstance(e["input"], dict) else "")
                        for e in err.errors()]
    raise UserError(f"{shown(path)}: " + "; ".join(problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """Records duplicated keys (which YAML resolves silently, last one wins) instead of hiding them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                self.duplicates.append((key, key_node.start_mark.line + 1))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> tuple[Any, list[tuple[Any, int]]]:
    """A YAML file and its duplicated keys as (key, line); a missing or unparsable file is a UserError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise UserError(f"{shown(Path(path))}: no such file") from err
    loader = _UniqueKeyLoader(text)
    loader.duplicates = []
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.YAMLError as err:
        raise UserError(f"{shown(Path(path))}: not valid YAML: {err}") from err
    finally:
        loader.dispose()


def add_stage_arguments(parser: argparse.ArgumentParser, *sections: str) -> None:
    """--pipeline, --config, --debug, and one flag per option of the named pipeline.yaml sections
    (`eval` gives --batch-size, --max-new-tokens, ...): the file is the default, the flag overrides it."""
    parser.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE, help="the pipeline settings")
    parser.add_argument("--config", type=Path, help="the Axolotl recipe (default: pipeline.yaml's `recipe`)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    for section in sections:
        model = PipelineConfig.model_fields[section].annotation
        group = parser.add_argument_group(f"{section} options (pipeline.yaml `{section}:`)")
        for name, field in model.model_fields.items():
            flag, dest = "--" + name.replace("_", "-"), f"{section}.{name}"
            if _is(field.annotation, bool):
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=field.description)
            elif _is(field.annotation, list):
                group.add_argument(flag, dest=dest, type=lambda s: s.split(","), default=argparse.SUPPRESS,
                                   help=field.description)
            else:  # pydantic converts and checks the text
                group.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=field.description)


def _is(annotation: Any, kind: type) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is(a, kind) for a in typing.get_args(annotation) if a is not type(None))
    return annotation is kind or typing.get_origin(annotation) is kind


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """pipeline.yaml with the command line's section flags (and --config) applied."""
    overrides: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if "." in dest:
            section, name = dest.split(".", 1)
            overrides.setdefault(section, {})[name] = value
    if getattr(args, "config", None):
        overrides["recipe"] = str(Path(args.config).absolute())  # the command line's: from the working directory
    return load_config(args.pipeline, overrides)


@dataclass(frozen=True)
class Recipe:
    """What our stages need from an Axolotl recipe: the model, the length limit, the files, the output."""

    path: Path
    base_model: str
    tokenizer: str
    sequence_len: int
    train_file: Path
    eval_file: Path
    output_dir: Path
    load_in_4bit: bool = False  # QLoRA: the adapter was trained on the NF4-quantized base

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = resolve(path)
        raw, _ = load_yaml(path)
        try:
            train = raw["datasets"][0]["path"]
            evaluation = raw["test_datasets"][0]["path"]
            return cls(path=path, base_model=_local_or_hub(raw["base_model"]),
                       tokenizer=_local_or_hub(raw.get("tokenizer_config") or raw["base_model"]),
                       sequence_len=int(raw["sequence_len"]), train_file=resolve(train),
                       eval_file=resolve(evaluation), output_dir=resolve(raw["output_dir"]),
                       load_in_4bit=bool(raw.get("load_in_4bit")))
        except (KeyError, IndexError, TypeError) as err:
            raise UserError(f"{shown(path)}: needs base_model, sequence_len, output_dir, and `datasets` and "
                            f"`test_datasets` entries with a `path` ({err!r} missing)") from err

    @property
    def data_dir(self) -> Path:
        """Where `make data` writes its set of files (train, eval, stats, rejects)."""
        if self.train_file.parent != self.eval_file.parent:
            raise UserError(f"{shown(self.path)}: the train and eval files must be in one directory, found "
                            f"{shown(self.train_file)} and {shown(self.eval_file)}")
        return self.train_file.parent

    @property
    def merged_dir(self) -> Path:
        """Where `make merge` writes the merged model, and where predict, export and push look for it."""
        return self.output_dir / "merged"


def _local_or_hub(name: str) -> str:
    """Recipes name local models relative to the repo root (as Axolotl, run from the root, reads them)."""
    local = resolve(name)
    return str(local) if local.exists() else name
