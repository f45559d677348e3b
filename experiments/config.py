"""Run configuration: everything needed to rerun a run, saved as the run folder's config.yaml."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ensemble.errors import UserError

_PATHS = ("data_path", "data_dir", "out")  # config keys that name files or folders

# the fix for a config file that cannot be read; public for callers that rewrite a run
# folder's damaged config.yaml instead, where this advice does not apply
CONFIG_FIX = "give the config.yaml a run or `tune` wrote"


def without_config_fix(message: str) -> str:
    """A ``from_file`` refusal without the advice for a ``--config`` file: where the file is
    a run folder's own, the fix is the run's."""
    for advice in (f"; correct it there, or {CONFIG_FIX}", f"; {CONFIG_FIX}"):
        message = message.removesuffix(advice)
    return message


# Settings that change every member's forecasts: a member's saved forecasts are keyed on
# them, and a rerun with another value is a new run.
DATA_SETTINGS = (
    "dataset",
    "data_path",
    "features",
    "target",
    "fill",
    "seq_len",
    "pred_len",
    "percent",
    "seed",
)


@dataclass
class RunConfig:
    dataset: str | None = "ETTh1"
    data_path: str | None = None
    data_dir: str | None = None
    features: str = "M"
    target: str | None = None
    fill: str | None = None
    seq_len: int = 512
    pred_len: int = 96
    percent: int = 100
    members: list[str] = field(default_factory=lambda: ["naive"])
    router: str = "mean"
    seed: int = 0
    out: str | None = None
    # ranked seasonal periods handed to the members instead of the analyser's (a config
    # from `tune` pins the trial's, its chosen period first); None: detect on the train rows
    periods: list[int] | None = None
    # per-member defaults, e.g. {"dlinear": {"kernel": 25}, "timellm": {"llm_layers": 6}}
    member_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> RunConfig:
        """Check every value's type (a config.yaml is edited by hand) and the seed's range.

        Raises:
            UserError: naming the key, the value and what it should be.
        """

        def bad(key: str, want: str) -> UserError:
            return UserError(f"config key {key}: {getattr(self, key)!r} is not {want}")

        for key in ("dataset", "data_path", "data_dir", "target", "fill", "out"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise bad(key, "a string")
        for key in ("seq_len", "pred_len", "percent", "seed"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(key, "a whole number")
        if not 0 <= self.seed < 2**32:  # numpy's and torch's seed range
            raise UserError(f"seed {self.seed} is out of range: give 0 .. {2**32 - 1}")
        if not isinstance(self.features, str):
            raise bad("features", "one of M, S, MS")
        if not isinstance(self.router, str):
            raise bad("router", "a router name such as mean or learned")
        members = [self.members] if isinstance(self.members, str) else self.members
        if not isinstance(members, list | tuple) or not all(isinstance(m, str) for m in members):
            raise bad("members", "a list of member specs such as [dlinear, arima]")
        p = self.periods
        if p is not None and (
            not isinstance(p, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in p)
        ):
            raise bad("periods", "a list of whole numbers >= 2 (or null: detect them)")
        mp = self.member_params
        if not isinstance(mp, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in mp.items()
        ):
            raise bad("member_params", "a mapping like {dlinear: {kernel: 25}}")
        return self

    def load_dataset(self):
        """The validated dataset these settings name (ensemble.data.load_dataset)."""
        from ensemble.data import load_dataset

        return load_dataset(
            self.dataset,
            data_path=self.data_path,
            data_dir=self.data_dir,
            features=self.features,
            target=self.target,
            fill=self.fill,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        names = {f.name for f in fields(cls)}
        unknown = {str(k) for k in d} - names
        if unknown:
            raise UserError(
                f"unknown config key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(sorted(names))}"
            )
        if isinstance(d.get("data_path"), str) and "dataset" not in d:
            # named by its file, not the default dataset's name: a published dataset's file
            # (ETT-small/ETTm1.csv, found under the data folder too) is that dataset, any
            # other is the user's own, as --data-path without --dataset (split 70/10/20)
            from ensemble.data import registered_stems

            stem = Path(d["data_path"]).stem.lower()
            d = {**d, "dataset": registered_stems().get(stem)}
        # "~/data/x.csv" in a config.yaml: YAML, unlike a shell, leaves the "~" alone
        d = {
            k: os.path.expanduser(v) if k in _PATHS and isinstance(v, str) else v
            for k, v in d.items()
        }
        return cls(**d).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """The settings in a config.yaml a run or ``tune`` wrote (or one edited by hand).

        Raises:
            UserError: a missing, empty or unreadable file, one that is no mapping of
                config keys (a CSV given by mistake), or a key of the wrong type; each
                named with the file and the fix.
        """
        path = Path(path)
        if path.is_dir():
            raise UserError(
                f"--config {path} is a folder: give the file, e.g. {path / 'config.yaml'}"
            )
        if not path.is_file():
            raise UserError(f"config file not found: {path}; {CONFIG_FIX}")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(
                f"{path}: not UTF-8 text (a YAML config is read as UTF-8; a file saved as GBK "
                "or ANSI must be saved again as UTF-8, e.g. Notepad: Save as, Encoding UTF-8)"
            ) from None
        except yaml.YAMLError as exc:
            raise UserError(
                f"{path}: not valid YAML ({str(exc).splitlines()[0]}); {CONFIG_FIX}"
            ) from None
        if d is None:  # no bytes, blanks or comments only: not the defaults run silently
            raise UserError(f"{path}: the file is empty (no config keys); {CONFIG_FIX}")
        if not isinstance(d, dict):
            found = {list: "a list", str: "plain text"}.get(type(d), f"a {type(d).__name__}")
            raise UserError(
                f"{path}: expected a mapping of config keys (key: value lines), found "
                f"{found}: not a config.yaml; {CONFIG_FIX}"
            )
        try:
            return cls.from_dict(d)
        except UserError as exc:  # a key's value: named with the file that holds it
            raise UserError(f"{path}: {exc}; correct it there, or {CONFIG_FIX}") from None


def held_config(folder: str | Path) -> dict[str, Any] | None:
    """The raw mapping in ``folder/config.yaml``, None where there is none or it cannot
    be read: for naming rules that look at one or two keys of an older run's config,
    which may be out of date in the others."""
    try:
        held = yaml.safe_load((Path(folder) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return held if isinstance(held, dict) else None
