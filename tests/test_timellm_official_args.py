"""The official Time-LLM flags: the seed command maps to the config our own flags build."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from ensemble.errors import UserError
from experiments.cli import build_parser, main
from experiments.cmd_run import config_from_args
from experiments.config import RunConfig
from timellm.official_args import check_channels, parse_official

# The user's command from the seeds document (run_main.py flags, one per line there).
SEED_COMMAND = r"""
  --task_name long_term_forecast --is_training 1 --root_path ./dataset/ETT-small/
  --data_path ETTm1.csv --model_id ETTm1_512_96 --model_comment Qwen3B --model TimeLLM
  --data ETTm1 --features M --seq_len 512 --label_len 48 --pred_len 96 --e_layers 2
  --d_layers 1 --factor 3 --enc_in 7 --dec_in 7 --c_out 7 --batch_size 8 --d_model 32
  --d_ff 32 --llm_dim 2048 --llm_layers 6 --num_workers 2 --prompt_domain 1
  --train_epochs 10 --itr 1 --dropout 0.1 --llm_model QWEN
  --llm_model_path "e:\timellm\Time-LLM\base_models\Qwen2.5-3B" --load_in_4bit
"""
QWEN = r"e:\timellm\Time-LLM\base_models\Qwen2.5-3B"


def seed_argv() -> list[str]:
    return shlex.split(SEED_COMMAND.replace("\\", "\\\\"))


def test_seed_command_in_the_seeds_document_is_the_one_tested():
    seeds = sorted(Path(__file__).resolve().parents[2].glob("shared/seeds/000_*.txt"))
    if not seeds:
        pytest.skip("seeds document not present")
    text = seeds[0].read_text(encoding="utf-8", errors="replace")
    block = text.split("python run_main.py", 1)[1].split("```", 1)[0]
    flags = [ln.strip().rstrip("^").strip() for ln in block.splitlines() if ln.strip()]
    assert shlex.split(" ".join(flags).replace("\\", "\\\\")) == seed_argv()


def test_seed_command_maps_to_the_same_config_as_run_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./dataset/prompt_bank here
    mapping = parse_official(seed_argv())
    official = RunConfig.from_dict(mapping.config)

    sets = {
        "backbone": QWEN,
        "llm_layers": 6,
        "llm_dim": 2048,
        "load_in_4bit": "true",
        "batch_size": 8,
        "d_model": 32,
        "d_ff": 32,
        "n_heads": 8,
        "dropout": 0.1,
        "patch_len": 16,
        "stride": 8,
        "num_prototypes": 1000,
        "eval_batch_size": 8,
        "lr": 0.0001,
        "epochs": 10,
        "patience": 10,
        "schedule": "official_type1",
        "pct_start": 0.2,
        "sample": "series",  # the official loader yields one channel of one window per item
    }
    argv = ["run", "--dataset", "ETTm1", "--features", "M", "--target", "OT"]
    argv += ["--seq-len", "512", "--pred-len", "96", "--percent", "100", "--seed", "2021"]
    argv += ["--members", "timellm", "--out", mapping.outs[0]]  # run_main.py's folder name
    for k, v in sets.items():
        argv += ["--set", f"timellm.{k}={v}"]
    ours = config_from_args(build_parser().parse_args(argv))
    assert official.to_dict() == ours.to_dict()

    assert mapping.member == "timellm" and mapping.itr == 1
    assert mapping.checks == {"enc_in": 7, "dec_in": 7, "c_out": 7}
    ignored = " ".join(mapping.ignored)
    for flag in ("label_len", "e_layers", "d_layers", "factor", "num_workers", "prompt_domain"):
        assert f"--{flag} " in ignored
    assert "--llm_model " in ignored  # the path decides


def test_prompt_domain_1_reads_run_mains_description_file(tmp_path, monkeypatch):
    # The seeds' user edited ./dataset/prompt_bank/ETT.txt; run_main.py reads it there.
    monkeypatch.chdir(tmp_path)
    bank = tmp_path / "dataset" / "prompt_bank"
    bank.mkdir(parents=True)
    (bank / "ETT.txt").write_bytes("\ufeff变压器油温，每 15 分钟一次。\n".encode())  # Notepad's BOM
    m = parse_official(seed_argv())
    assert m.config["member_params"]["timellm"]["description"] == "变压器油温，每 15 分钟一次。"
    assert not any("prompt_domain" in s for s in m.ignored)
    assert f"prompt description: {Path('dataset/prompt_bank/ETT.txt')} (16 characters)" in (m.notes)
    # --set wins; --prompt_domain 0 and other data keep the prompt bank's, and say so
    again = parse_official([*seed_argv(), "--set", "description=mine"])
    assert again.config["member_params"]["timellm"]["description"] == "mine"
    # run_main.py tests the flag for truth: 2 reads the file as 1 does
    two = parse_official([*seed_argv(), "--prompt_domain", "2"])
    assert two.config["member_params"]["timellm"]["description"] == "变压器油温，每 15 分钟一次。"
    for argv in (
        [*seed_argv(), "--prompt_domain", "0"],
        [*seed_argv(), "--data", "weather", "--root_path", "./dataset/weather/"]
        + ["--data_path", "weather.csv"],
    ):
        m = parse_official(argv)
        assert "description" not in m.config["member_params"]["timellm"]
        assert any(s.startswith("--prompt_domain") for s in m.ignored)


@pytest.mark.parametrize(
    "content,match",
    [("变压器".encode("gbk"), "is not UTF-8 text: save it as UTF-8"), (b" \n", "is empty")],
)
def test_a_description_file_that_cannot_be_used_is_one_line(tmp_path, monkeypatch, content, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset" / "prompt_bank").mkdir(parents=True)
    (tmp_path / "dataset" / "prompt_bank" / "ETT.txt").write_bytes(content)
    with pytest.raises(UserError, match=match):
        parse_official(seed_argv())


def test_official_defaults_apply_when_flags_are_left_out():
    cfg = parse_official(["--task_name", "long_term_forecast", "--llm_model", "BERT"]).config
    assert (cfg["dataset"], cfg["seq_len"], cfg["pred_len"], cfg["seed"]) == ("ETTh1", 96, 96, 2021)
    p = cfg["member_params"]["timellm"]
    assert p["backbone"] == "minilm" and p["d_model"] == 16 and p["lr"] == 1e-4
    assert p["batch_size"] == 32 and p["patience"] == 10 and p["schedule"] == "official_type1"


def test_patience_0_stops_at_the_first_epoch_without_a_gain_as_run_main_does():
    # run_main's EarlyStopping: counter >= 0 stops at once; ours read 0 as "never"
    params = parse_official([*seed_argv(), "--patience", "0"]).config["member_params"]
    assert params["timellm"]["patience"] == 1


def test_the_rates_run_main_trains_with_are_said():
    # The seeds' command passes no --learning_rate and no --lradj: 1e-4 with type1, which
    # run_main.py trains at 1e-4 / 25, then halves from the third epoch on.
    notes = parse_official(seed_argv()).notes
    assert [n for n in notes if n.startswith("learning rate:")] == [
        "learning rate: --learning_rate 0.0001 with --lradj type1 trains at 4e-06, 4e-06, "
        "2e-06, 1e-06, ... per epoch, as run_main.py does (its OneCycleLR starts at lr/25 and "
        "is never stepped); with --lradj TST the rate peaks at the one given (OneCycle), with COS "
        "it starts there."
    ]
    # the repeats' sentence only where there are repeats
    itr = parse_official([*seed_argv(), "--itr", "2"]).notes[-1]
    assert itr.endswith(
        "With --itr 2, every repeat trains at these rates (run_main.py's repeats divide the "
        "rate by 25 again each time: docs/timellm.md)"
    )
    two = parse_official([*seed_argv(), "--train_epochs", "2", "--set", "lr=0.01"]).notes
    assert "trains at 0.0004, 0.0004 per epoch" in two[-1]
    for lradj in ("TST", "COS"):
        assert not any(
            "learning rate" in n for n in parse_official([*seed_argv(), "--lradj", lradj]).notes
        )
    assert (
        "0.0001 with --lradj constant trains at 4e-06, 4e-06, 4e-06, 4e-06, ..."
        in (parse_official([*seed_argv(), "--lradj", "constant"]).notes[-1])
    )


def test_dlinear_at_run_mains_learning_rate_is_pointed_out(synth_csv):
    def notes(*flags: str) -> list[str]:
        argv = [*seed_argv(), "--model", "DLinear", *flags]
        return [n for n in parse_official(argv).notes if n.startswith("learning rate")]

    # ETTm1 (the seeds' data): DLinear's authors train it at run_main.py's 1e-4 too
    assert notes() == []
    h1 = ["--data", "ETTh1", "--data_path", "ETTh1.csv"]
    (note,) = notes(*h1)
    assert "DLinear's authors train ETTh1 at 0.005 with batch size 32" in note
    assert "pass --learning_rate 0.005 --batch_size 32" in note
    csv = synth_csv(name="mine.csv")
    (note,) = notes("--data", "custom", "--root_path", str(csv.parent), "--data_path", csv.name)
    assert "set it per dataset" in note
    for given in (["--learning_rate", "0.005"], ["--set", "lr=0.005"]):
        assert notes(*h1, *given) == []


def test_run_folders_are_named_as_run_main_names_its_checkpoints():
    # run_main.py: checkpoints/<setting>-<model_comment>, so another lookback gets its own
    name = "long_term_forecast_ETTm1_512_96_TimeLLM_ETTm1_ftM_sl512_ll48_pl96_dm32_nh8_el2_dl1_df32_fc3_ebtimeF_test_{}-Qwen3B"
    assert parse_official(seed_argv()).outs == ["runs/" + name.format(0)]
    assert parse_official(seed_argv()).config["out"] == "runs/" + name.format(0)
    other = parse_official([*seed_argv(), "--seq_len", "336"]).outs[0]
    assert "_sl336_" in other and other != "runs/" + name.format(0)
    assert parse_official([*seed_argv(), "--itr", "2"]).outs == [
        "runs/" + name.format(0),
        "runs/" + name.format(1),
    ]
    # another seed than run_main.py's 2021 is another run, not a replacement of that one
    assert parse_official([*seed_argv(), "--seed", "2021"]).outs == ["runs/" + name.format(0)]
    assert parse_official([*seed_argv(), "--seed", "1", "--itr", "2"]).outs == [
        "runs/" + name.format(0) + "-seed1",
        "runs/" + name.format(1) + "-seed2",
    ]
    assert parse_official([*seed_argv(), "--itr", "2", "--out", "r"]).outs == ["r_itr0", "r_itr1"]
    with pytest.raises(UserError, match="reaches seed 4294967296"):  # before the first run
        parse_official([*seed_argv(), "--seed", "4294967295", "--itr", "2"])
    assert parse_official([*seed_argv(), "--out", "r"]).outs == ["r"]


def test_a_run_in_the_older_default_folder_resumes_there(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)  # no ./dataset/prompt_bank here
    first = parse_official(seed_argv())
    older = Path("runs/ETTm1_512_96-Qwen3B")  # the default folder before run_main.py's names
    older.mkdir(parents=True)
    held = {**first.config, "out": str(older)}
    (older / "config.yaml").write_text(yaml.safe_dump(held), encoding="utf-8")
    again = parse_official(seed_argv())
    assert again.outs == [str(older)] and again.config["out"] == str(older)
    assert any(n.startswith(f"run folder: {older}") for n in again.notes)
    # another lookback is another run: the new name, the older folder left alone
    other = parse_official([*seed_argv(), "--seq_len", "336"])
    assert other.outs[0] != str(older) and "_sl336_" in other.outs[0]


def test_set_takes_the_member_prefix_run_uses():
    m = parse_official([*seed_argv(), "--set", "timellm.prompt_stats=min,max,mean"])
    assert m.config["member_params"]["timellm"]["prompt_stats"] == "min,max,mean"
    bad = parse_official([*seed_argv(), "--set", "lr=abc"]).notes  # no traceback in the note
    assert not any(n.startswith("learning rate") for n in bad)


def test_our_flags_and_set_pass_through():
    m = parse_official(
        "--llm_model BERT --train-stride 8 --val_stride 4 --inject dlinear+ridge --resume "
        "--precision fp32 --lradj COS --set prototype_map=full --set sample=series".split()
    )
    p = m.config["member_params"]["timellm"]
    assert (p["train_stride"], p["val_stride"], p["inject"]) == (8, 4, "dlinear+ridge")
    assert p["resume"] is True and p["precision"] == "fp32" and p["schedule"] == "official_cos"
    assert p["prototype_map"] == "full" and p["sample"] == "series"


def test_faithful_undoes_the_deviations_by_choice_and_set_still_wins():
    import inspect

    from timellm.member import TimeLLMForecaster
    from timellm.official_args import FAITHFUL

    plain = parse_official("--llm_model BERT".split()).config["member_params"]["timellm"]
    p = parse_official("--llm_model BERT --faithful".split()).config["member_params"]["timellm"]
    assert {k: p[k] for k in ("prompt", "prototype_map", "backbone_dropout")} == {
        "prompt": "official",
        "prototype_map": "full",
        "backbone_dropout": True,
    }
    assert {k for k in p if p[k] != plain.get(k)} == set(FAITHFUL)  # nothing else changes
    defaults = inspect.signature(TimeLLMForecaster).parameters  # what the plain command runs
    assert all(defaults[k].default != v for k, v in FAITHFUL.items())
    p = parse_official("--llm_model BERT --faithful --set prototype_map=lowrank".split())
    assert p.config["member_params"]["timellm"]["prototype_map"] == "lowrank"


def test_dlinear_model_runs_our_dlinear():
    m = parse_official(
        "--model DLinear --moving_avg 49 --learning_rate 0.005 --llm_layers 3".split()
    )
    assert m.member == "dlinear" and m.config["members"] == ["dlinear"]
    p = m.config["member_params"]["dlinear"]
    assert p["kernel"] == 49 and p["lr"] == 0.005
    assert any(s.startswith("--llm_layers") for s in m.ignored)
    assert not any(s.startswith("--faithful") for s in m.ignored)
    again = parse_official("--model DLinear --faithful --prompt_domain 1".split())
    assert {s.split()[0] for s in again.ignored} >= {"--faithful", "--prompt_domain"}


@pytest.mark.parametrize(
    "argv,match",
    [
        ("--llm_model GPT2", "GPT-2 weights"),
        ("--llm_model QWEN", "--llm_model_path"),
        ("--llm_model LLAMA", "--llm_model_path"),
        ("--task_name imputation", "long_term_forecast"),
        ("--model Autoformer", "TimeLLM or DLinear"),
        ("--llm_model BERT --lradj type9", "lradj"),
        ("--llm_model BERT --data custom --root_path /nope --data_path x.csv", "not found"),
    ],
)
def test_user_errors(argv, match):
    with pytest.raises(UserError, match=match):
        parse_official(argv.split())


def test_data_paths(tmp_path, monkeypatch):
    csv = tmp_path / "my.csv"
    csv.write_text("date,a\n", encoding="utf-8")
    m = parse_official(
        f"--llm_model BERT --data custom --root_path {tmp_path} --data_path my.csv".split()
    )
    assert m.config["dataset"] is None and m.config["data_path"] == str(csv)
    # a relative --root_path is stored absolute: config.yaml reruns from any folder
    monkeypatch.chdir(tmp_path.parent)
    m = parse_official(
        f"--llm_model BERT --data custom --root_path ./{tmp_path.name} --data_path my.csv".split()
    )
    assert m.config["data_path"] == str(csv.resolve())
    m = parse_official(
        "--llm_model BERT --data Weather --root_path /nope --data_path weather.csv".split()
    )
    assert m.config["dataset"] == "weather" and m.config["data_path"] is None


def test_channel_checks():
    # notices, not errors: the official TimeLLM never reads them
    m = parse_official("--llm_model BERT --enc_in 7 --c_out 1".split())
    assert check_channels(m, 7, "MS") == []
    assert check_channels(m, 7, "M") == [
        "--c_out 1 (the data has 7 output channel(s) with --features M)"
    ]


def test_a_missing_file_of_another_dataset_is_refused(tmp_path):
    # ETTm1.csv missing under --root_path: not silently replaced by our ETTh1
    argv = f"--llm_model BERT --data ETTh1 --root_path {tmp_path} --data_path ETTm1.csv"
    with pytest.raises(UserError, match="not ETTh1's file"):
        parse_official(argv.split())
    ok = parse_official(f"--llm_model BERT --data ETTh1 --root_path {tmp_path}".split())
    assert ok.config["dataset"] == "ETTh1" and ok.config["data_path"] is None
    m = parse_official("--model DLinear --lradj COS".split())
    assert any(i.startswith("--lradj") for i in m.ignored)


def test_a_data_key_run_main_lacks_is_refused_for_a_registered_file(tmp_path):
    # `--data Nope` trained on the default --data_path ETTh1.csv; run_main.py stops on it
    with pytest.raises(
        UserError,
        match="--data Nope is not a dataset run_main.py knows; for ETTh1.csv pass --data ETTh1",
    ):
        parse_official("--llm_model BERT --data Nope".split())
    for key in ("custom", "ECL", "Traffic"):  # run_main.py's Dataset_Custom keys
        m = parse_official(f"--llm_model BERT --data {key} --root_path {tmp_path}".split())
        assert m.config["dataset"] == "ETTh1"
    other = tmp_path / "mine.csv"  # a key of the user's own fork, with its own file
    other.write_text("date,OT\n2020-01-01,1\n", encoding="utf-8")
    m = parse_official(
        f"--llm_model BERT --data mine --root_path {tmp_path} --data_path mine.csv".split()
    )
    assert m.config["data_path"] == str(other.resolve())


def test_cli_exit_code_and_ignored_line(capsys):
    assert main(["timellm", "--task_name", "long_term_forecast", "--llm_model", "GPT2"]) == 2
    assert "GPT-2" in capsys.readouterr().err


@pytest.fixture
def tiny_llama(monkeypatch):
    """Any backbone the command asks for is a tiny random LLaMA (no download), whatever
    the folder it names holds."""
    import timellm.backbone as backbone_mod
    import timellm.member as member_mod

    monkeypatch.setattr(member_mod, "check_backbone", lambda *a: None)
    monkeypatch.setattr(
        backbone_mod,
        "load_backbone",
        lambda spec, **kw: backbone_mod.random_backbone(
            "llama",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        ),
    )


def test_cli_runs_a_tiny_seed_like_command(tmp_path, synth_csv, tiny_llama, capsys):
    csv = synth_csv(n=400, channels=2)
    argv = (
        f"timellm --task_name long_term_forecast --is_training 1 --root_path {csv.parent} "
        f"--data_path {csv.name} --model_id t --model_comment c --model TimeLLM --data custom "
        "--features M --seq_len 32 --label_len 16 --pred_len 8 --enc_in 2 --dec_in 2 --c_out 2 "
        "--batch_size 8 --d_model 8 --d_ff 16 --n_heads 2 --num_tokens 16 --train_epochs 1 "
        f"--learning_rate 0.01 --llm_model LLAMA --llm_model_path {tmp_path} --train-stride 8 "
        f"--quiet --out {tmp_path / 'run'}"
    )
    # --is_training 0 tests a trained model: there is none yet, so nothing is trained
    assert main(argv.replace("--is_training 1", "--is_training 0").split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: timellm has no trained model of these data and settings")
    assert not (tmp_path / "run").exists()
    assert main(argv.split()) == 0
    cap = capsys.readouterr()
    assert cap.err.startswith("learning rate: --learning_rate 0.01 with --lradj type1")
    assert "\nignored (no meaning here): --label_len" in cap.err
    assert "test MSE" in cap.out and "ignored" not in cap.out
    assert (tmp_path / "run" / "results.json").is_file()
    assert (tmp_path / "run" / "members" / "timellm" / "checkpoint.pt").is_file()
    # now it tests the saved model, with the same numbers
    mse = cap.out.split("test MSE ")[1].split()[0]
    assert main(argv.replace("--is_training 1", "--is_training 0").split()) == 0
    assert f"test MSE {mse}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["timellm", "--no-such-flag"])


def test_explain_timellm_prints_flow_parameters_and_memory(synth_csv, tiny_llama, capsys):
    import json

    csv = synth_csv(n=400, channels=2)
    argv = (
        f"explain timellm --root_path {csv.parent} --data_path {csv.name} --data custom "
        "--seq_len 32 --pred_len 8 --label_len 16 --batch_size 2 --d_model 8 --d_ff 16 "
        "--n_heads 2 --num_tokens 16 --llm_model LLAMA --llm_model_path x --json"
    )
    assert main(argv.split()) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    assert "--label_len" in captured.err
    stages = {s["stage"]: s["shape"] for s in info["stages"]}
    # the official batch: batch_size univariate series, not batch_size windows x 2 channels
    assert stages["input"] == [2, 32, 1] and stages["output (de-normalised)"] == [2, 8, 1]
    assert info["parameters"]["llm"]["trainable"] == 0 and info["parameters"]["head"]["trainable"]
    assert info["memory"]["rss_peak_mb"] > 0
    # Adam's two float32 moments per trainable parameter, which the step does not allocate
    adam = 8 * info["totals"]["trainable"] / 2**20
    assert info["memory"]["adam_state_mb"] == pytest.approx(adam, abs=0.06)
    assert main(argv.replace(" --json", "").split()) == 0
    assert f"Adam's two moments per trainable parameter, {round(adam, 1)} MiB" in (
        capsys.readouterr().out
    )
    # a GPU budget: a verdict and the largest batch, or the settings to lower
    assert main([*argv.split(), "--gpu-memory", "6"]) == 0
    budget = json.loads(capsys.readouterr().out)["gpu_budget"]
    assert budget["fits"] and budget["max_batch_size"] > 2
    assert main([*argv.replace(" --json", "").split(), "--gpu-memory", "0.5"]) == 0
    assert "does NOT fit in 0.5 GiB; not even --batch_size 1 fits" in capsys.readouterr().out
    assert main([*argv.split(), "--gpu-memory", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --gpu-memory 0: give the GPU's memory in GiB, e.g. 6"
    )


@pytest.mark.parametrize("native_bf16", [True, False])
def test_explain_says_when_a_4bit_backbone_measures_float32_for_emulated_bf16(
    synth_csv, tiny_llama, capsys, monkeypatch, native_bf16
):
    # an AVX2 CPU: the 4-bit backbone computes in float32 (bf16 is emulated, ~40x slower),
    # so its activations are about twice a bf16 GPU's: explain says so, on stderr
    import json

    import timellm.member

    monkeypatch.setattr(timellm.member, "cpu_has_native_bf16", lambda: native_bf16)
    csv = synth_csv(n=400, channels=2)
    argv = (
        f"explain timellm --root_path {csv.parent} --data_path {csv.name} --data custom "
        "--seq_len 32 --pred_len 8 --batch_size 2 --d_model 8 --d_ff 16 --n_heads 2 "
        "--num_tokens 16 --llm_model LLAMA --llm_model_path x --load_in_4bit --json"
    )
    assert main([*argv.split(), "--gpu-memory", "6"]) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)  # stdout stays one JSON document
    assert ("no native bf16" in captured.err) is not native_bf16
    assert ("measured_in" in info["memory"]) is not native_bf16  # the JSON says so too
    assert main([*argv.replace(" --json", "").split(), "--gpu-memory", "6"]) == 0
    assert ("Measured in float32" in capsys.readouterr().out) is not native_bf16
    assert main([*argv.split(), "--precision", "bf16"]) == 0  # asked for: no notice
    assert "no native bf16" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,needle",
    [
        ("--d_model 0", "--d_model must be at least 1"),
        ("--patch_len 0", "--patch_len must be at least 1"),
        ("--train_epochs 0", "--train_epochs must be at least 1"),
        ("--batch_size 0", "--batch_size must be at least 1"),
        ("--seq_len 48 --patch_len 100", "longer than --seq_len 48"),
        ("--d_ff 0", "--d_ff must be at least 1"),
        ("--stride 0", "--stride must be at least 1"),
        ("--num_tokens 0", "--num_tokens must be at least 1"),
    ],
)
def test_sizes_below_one_are_refused_before_any_model_is_built(flags, needle):
    with pytest.raises(UserError, match=needle):
        parse_official(["--llm_model", "BERT", *shlex.split(flags)])


@pytest.mark.parametrize(
    "flags,needle",
    [
        ("--set llm_layers=abc", "--set llm_layers=abc: must be a whole number of at least 1"),
        ("--set d_model=0", "--set d_model=0: must be a whole number"),
        ("--llm_layers 0", "--llm_layers must be at least 1"),
        ("--seq_len 48 --set patch_len=100", "--set patch_len=100 is longer than --seq_len 48"),
        ("--device abc", "--device abc: use cpu or cuda"),
        ("--set device=gpu", "--set device=gpu: use cpu or cuda"),
        ("--llm_model_path /nonexistent", "--llm_model_path /nonexistent: no such folder"),
        ("--backbone ./no/such/model", "--backbone ./no/such/model: no such folder"),
    ],
)
def test_set_values_device_and_model_folder_are_checked_before_any_model_is_built(flags, needle):
    with pytest.raises(UserError, match=needle):
        parse_official(["--llm_model", "BERT", *shlex.split(flags)])


def test_a_gguf_file_as_the_model_path_is_named_a_file(tmp_path, monkeypatch):
    # "no such folder" for a file that is there, or the network blamed for a relative one
    (tmp_path / "qwen.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    for value in (str(tmp_path / "qwen.gguf"), "qwen.gguf"):
        with pytest.raises(UserError, match=f"--llm_model_path {value}: a file, not a folder"):
            parse_official(["--llm_model", "BERT", "--llm_model_path", value])


def test_device_cuda_without_a_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        assert parse_official(["--llm_model", "BERT", "--device", "cuda"]).member == "timellm"
    else:  # the accelerator would silently fall back to the CPU
        with pytest.raises(UserError, match="no CUDA GPU is visible"):
            parse_official(["--llm_model", "BERT", "--device", "cuda"])


def _explain_refusal(csv, flags: str, capsys) -> str:
    """The one line `explain timellm` on ``csv`` with ``flags`` is refused with."""
    argv = (
        f"explain timellm --root_path {csv.parent} --data_path {csv.name} --data custom "
        f"--seq_len 32 --pred_len 8 --llm_model BERT {flags}"
    )
    assert main(argv.split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_explain_error_is_the_only_line_on_stderr(synth_csv, capsys):
    # --label_len is ignored: that note must not come before an error at build time
    line = _explain_refusal(synth_csv(n=400, channels=2), "--label_len 16 --llm_layers 100", capsys)
    assert "llm_layers 100 is out of range" in line


def test_explain_sizes_no_machine_holds_are_one_line(synth_csv, capsys):
    # 10**12 prototypes: petabytes, refused by the allocator at once on any machine
    csv = synth_csv(n=400, channels=2)
    line = _explain_refusal(csv, "--llm_layers 1 --num_tokens 1000000000000", capsys)
    err = [line]
    assert err[0].startswith("error: explain: out of memory (an allocation")
    assert "--num_tokens (now 1000000000000)" in err[0] and "--pred_len (now 8)" in err[0]


def test_explain_estimates_one_epoch_of_the_command(data_dir, capsys):
    from ensemble.data import load_dataset, make_splits
    from timellm.trainer import select_starts

    argv = ["explain", "timellm", "--llm_model", "BERT", "--data", "ETTh1", "--root_path"]
    argv += [str(data_dir / "ETT-small"), "--data_path", "ETTh1.csv", "--seq_len", "96"]
    argv += ["--pred_len", "24", "--llm_layers", "1", "--batch_size", "4", "--d_ff", "16"]
    argv += ["--train_stride", "16", "--val_stride", "2", "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    splits = make_splits(load_dataset("ETTh1", data_dir=data_dir), 96, 24)
    # the official batching: 4 univariate series per step, 7 channels of one window in 16
    # (drawn with run_main.py's seed, 2021; val with the next)
    windows = len(select_starts(splits.train.n_windows, 16, seed=2021))
    assert info["epoch"]["train_steps"] == -(-(windows * 7) // 4)
    assert info["epoch"]["val_series"] == len(select_starts(splits.val.n_windows, 2, seed=2022)) * 7
    t = info["timing"]
    assert t["train_step_s"] > 0 and t["forward_s"] > 0
    expect = info["epoch"]["train_steps"] * t["train_step_s"]
    assert info["epoch"]["train_s"] == pytest.approx(expect, abs=0.1)


def test_explain_shows_the_prompt_with_the_description_it_read(
    data_dir, tmp_path, monkeypatch, capsys
):
    data_dir = data_dir.resolve()  # CI gives it relative to the folder left here
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset" / "prompt_bank").mkdir(parents=True)
    (tmp_path / "dataset" / "prompt_bank" / "ETT.txt").write_text("我的描述。", encoding="utf-8")
    argv = ["explain", "timellm", "--llm_model", "BERT", "--data", "ETTh1", "--root_path"]
    argv += [str(data_dir / "ETT-small"), "--data_path", "ETTh1.csv", "--seq_len", "96"]
    argv += ["--pred_len", "24", "--llm_layers", "1", "--d_ff", "16", "--prompt_domain", "1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "prompt description: " in err and "ETT.txt (5 characters)" in err
    assert "Prompt of one series" in out and "我的描述。" in out


def test_itr_runs_end_with_their_mean_and_the_summary_command(synth_csv, tmp_path, capsys):
    csv = synth_csv()
    argv = ["timellm", "--model", "DLinear", "--data", "custom", "--root_path", str(csv.parent)]
    argv += ["--data_path", csv.name, "--features", "M", "--seq_len", "32", "--label_len", "16"]
    argv += ["--pred_len", "8", "--train_epochs", "2", "--itr", "2", "--seed", "0", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    folders = [tmp_path / "r_itr0", tmp_path / "r_itr1"]
    mse = [
        json.loads((f / "results.json").read_text(encoding="utf-8"))["test"]["dlinear"]["mse"]
        for f in folders
    ]
    assert f"2 seeds: test MSE {np.mean(mse):.4f} ± {np.std(mse, ddof=1):.4f}" in out
    assert f"hybrid-forecast summary {folders[0]} {folders[1]}" in out
    assert main([*argv, "--itr", "1", "--out", str(tmp_path / "one")]) == 0
    assert "seeds: test MSE" not in capsys.readouterr().out


def test_refusals_name_this_commands_flags_not_runs(data_dir, capsys):
    # "pass --dataset ETTh1" and "lower --seq-len/--pred-len": flags of another command
    base = ["timellm", "--task_name", "long_term_forecast", "--llm_model", "BERT"]
    base += ["--root_path", str(data_dir / "ETT-small"), "--data_path", "ETTh1.csv"]
    assert main([*base, "--data", "ETTm1"]) == 2
    err = capsys.readouterr().err
    assert "--data ETTm1 with --data_path ETTh1.csv" in err and "--dataset" not in err
    assert main([*base, "--seq_len", "96", "--pred_len", "100000"]) == 2
    err = capsys.readouterr().err
    assert "lower --seq_len/--pred_len" in err and "--seq-len" not in err


def _dlinear_argv(csv: Path) -> list[str]:
    return [
        "--model",
        "DLinear",
        "--data",
        "custom",
        "--root_path",
        str(csv.parent),
        "--data_path",
        csv.name,
        "--seq_len",
        "32",
        "--pred_len",
        "8",
    ]


def _mapped(m) -> tuple:
    return (m.config, m.member, m.checks, m.itr, m.outs, m.train)


def test_dlinear_lists_every_flag_it_drops(synth_csv):
    # README: "Flags that mean nothing here are accepted and listed as ignored": every flag
    # given to --model DLinear changes the run, is listed as ignored, or is refused
    import argparse

    from timellm.official_args import add_official_arguments

    base = _dlinear_argv(synth_csv())
    plain = parse_official(base)
    parser = argparse.ArgumentParser(add_help=False)
    add_official_arguments(parser)
    value = {int: "3", float: "0.3"}
    choices = {"lradj": "COS", "precision": "fp32", "device": "cpu", "llm_model": "BERT"}
    choices["is_training"] = "0"  # 3 trains, as the default 1 does
    skip = {"task_name", "model", "data", "root_path", "data_path", "set", "quiet"}
    refused = {"train_stride", "val_stride"}  # no such setting: it would change the numbers
    for action in parser._actions:
        dest, flag = action.dest, action.option_strings[0]
        if dest in skip:  # the data and model are given above; --quiet is run()'s progress
            continue
        if action.nargs == 0:
            given = [flag]
        else:
            given = [flag, choices.get(dest) or value.get(action.type, "x")]
        if dest in refused:
            with pytest.raises(UserError, match=f"--{dest}: our DLinear trains"):
                parse_official([*base, *given])
            continue
        m = parse_official([*base, *given])
        listed = any(i.startswith(f"--{dest} ") for i in m.ignored)
        assert listed or _mapped(m) != _mapped(plain), f"{flag} dropped unnoticed"
    # the ones a user would expect to act say why they do not
    m = parse_official(
        [
            *base,
            "--device",
            "cuda",
            "--resume",
            "--lradj",
            "TST",
            "--pct_start",
            "0.3",
            "--llm_model",
            "BERT",
            "--backbone",
            "minilm",
        ]
    )
    assert "--device (our DLinear runs on the CPU)" in m.ignored
    assert "--resume (DLinear keeps no checkpoint)" in m.ignored
    assert any(i.startswith("--pct_start") for i in m.ignored)  # --lradj TST is ours only
    assert [i for i in m.ignored if i.startswith("--llm_model")] == [
        "--llm_model (DLinear has no LLM)"
    ]


def test_des_is_said_to_name_the_run_folder():
    m = parse_official("--llm_model BERT --des exp1".split())
    assert "--des (only names the run folder)" in m.ignored and "_exp1_0-" in m.outs[0]


def test_a_registered_file_missing_under_root_path_is_said_when_read_elsewhere(
    tmp_path, monkeypatch
):
    data = tmp_path / "data"
    (data / "ETT-small").mkdir(parents=True)
    ours = data / "ETT-small" / "ETTh1.csv"
    ours.write_text("date,OT\n", encoding="utf-8")
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(data))
    wrong = tmp_path / "nowhere"
    argv = f"--llm_model BERT --data ETTh1 --root_path {wrong} --data_path ETTh1.csv".split()
    m = parse_official(argv)
    assert m.config["dataset"] == "ETTh1" and m.missing_data is None
    assert m.notes[0] == f"{wrong / 'ETTh1.csv'} not found; using {ours}"
    # --data custom with a registered file's name takes the same way
    m = parse_official([*argv[:2], "--data", "custom", *argv[4:]])
    assert m.notes[0] == f"{wrong / 'ETTh1.csv'} not found; using {ours}"
    # nowhere at all: the refusal names the user's file first, then ours, and a command
    # `data download` takes (--data-dir, not --root_path)
    ours.unlink()
    m = parse_official(argv)
    assert not any("not found" in n for n in m.notes)
    assert m.missing_data.startswith(f"data file not found: {wrong / 'ETTh1.csv'} (from")
    assert f"`hybrid-forecast data download ETTh1 --data-dir {data}`" in m.missing_data
    # present where the user said: no note
    (wrong).mkdir()
    (wrong / "ETTh1.csv").write_text("date,OT\n", encoding="utf-8")
    m = parse_official(argv)
    assert m.missing_data is None and not any("not found" in n for n in m.notes)


def test_a_missing_file_is_refused_naming_root_path_and_a_command_that_works(
    tmp_path, monkeypatch, capsys
):
    # the audit's case: an empty folder, no $HYBRID_FORECAST_DATA
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYBRID_FORECAST_DATA", raising=False)
    argv = ["timellm", "--task_name", "long_term_forecast", "--llm_model", "BERT"]
    argv += ["--data", "ETTh1", "--root_path", "/nowhere", "--data_path", "ETTh1.csv"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: data file not found: /nowhere/ETTh1.csv (from --root_path")
    assert "`hybrid-forecast data download ETTh1 --data-dir dataset`" in err
    assert "--root_path dataset" not in err


def test_quoted_commands_keep_their_own_flags():
    from experiments.cmd_timellm import official_words

    with pytest.raises(UserError) as exc, official_words():
        raise UserError(
            "pass --dataset ETTh1 or --data-dir D; run `hybrid-forecast data download ETTh1 "
            "--data-dir dataset` or `hybrid-forecast run --dataset ETTh1`"
        )
    assert str(exc.value) == (
        "pass --data ETTh1 or --data-dir D; run `hybrid-forecast data download ETTh1 "
        "--data-dir dataset` or `hybrid-forecast run --dataset ETTh1`"
    )


def test_a_file_read_elsewhere_is_said_on_stderr_and_in_run_log(
    tmp_path, synth_csv, monkeypatch, capsys
):
    data = tmp_path / "data"
    (data / "ETT-small").mkdir(parents=True)
    synth_csv(n=14400, name="ETTh1.csv").replace(data / "ETT-small" / "ETTh1.csv")
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(data))
    argv = ["timellm", "--model", "DLinear", "--data", "ETTh1", "--root_path", str(data)]
    argv += ["--data_path", "ETTh1.csv", "--seq_len", "32", "--pred_len", "8", "--quiet"]
    argv += ["--train_epochs", "1", "--percent", "30", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    said = f"{data / 'ETTh1.csv'} not found; using {data / 'ETT-small' / 'ETTh1.csv'}"
    assert said in capsys.readouterr().err.splitlines()
    assert said in (tmp_path / "r" / "run.log").read_text(encoding="utf-8")


def test_dlinear_schedule_notice_points_at_its_deviation_row():
    # run_main.py's DLinear trains at lr/25 (its OneCycleLR is built for every --model);
    # ours at lr, halved: the deviation table says so and --lradj's notice points there
    import re

    m = parse_official("--model DLinear --lradj type1".split())
    (why,) = [i for i in m.ignored if i.startswith("--lradj")]
    number = re.search(r"docs/timellm.md deviation (\d+)", why).group(1)
    docs = Path(__file__).resolve().parents[1] / "docs" / "timellm.md"
    rows = [
        r for r in docs.read_text(encoding="utf-8").splitlines() if r.startswith(f"| {number} |")
    ]
    assert len(rows) == 1 and "`--model DLinear`" in rows[0] and "lr/25" in rows[0]


@pytest.mark.parametrize("windows", [True, False])
def test_the_download_command_of_a_missing_file_is_quoted_for_the_shell(
    windows, tmp_path, monkeypatch
):
    # a data folder with a space was two words of the command printed to copy
    monkeypatch.setattr("ensemble.shell._WINDOWS", windows)
    data = tmp_path / "my data"
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(data))
    wrong = tmp_path / "nowhere"
    m = parse_official(
        ["--llm_model", "BERT", "--data", "ETTh1", "--root_path", str(wrong)]
        + ["--data_path", "ETTh1.csv"]
    )
    q = f'"{data}"' if windows else f"'{data}'"
    assert f"`hybrid-forecast data download ETTh1 --data-dir {q}`" in m.missing_data


@pytest.mark.parametrize(
    "case",
    ["out_a_file", "out_dev_null", "nothing_to_test", "bad_kernel", "pct_start", "too_short"],
)
def test_a_refused_input_is_its_error_line_alone(case, tmp_path, synth_csv, tiny_llama, capsys):
    # the notes (learning rate, flags ignored) were printed before the input was checked:
    # two or three lines ending in the error, and "--pct_start ... ignored" then "error:
    # pct_start must be in [0, 1]"
    csv = synth_csv(n=40 if case == "too_short" else 400, channels=2)
    argv = ["timellm", "--data", "custom", "--root_path", str(csv.parent), "--data_path"]
    argv += [csv.name, "--seq_len", "24", "--pred_len", "8", "--train_epochs", "1", "--quiet"]
    argv += ["--llm_model", "LLAMA", "--llm_model_path", str(tmp_path), "--llm_layers", "1"]
    argv += ["--d_model", "8", "--d_ff", "16", "--n_heads", "2", "--num_tokens", "16"]
    out = tmp_path / "run"
    if case == "out_a_file":
        out.write_text("mine", encoding="utf-8")
    extra = {
        "out_dev_null": ["--model", "DLinear", "--moving_avg", "5"],
        "out_a_file": ["--model", "DLinear", "--moving_avg", "5"],
        "nothing_to_test": ["--is_training", "0"],
        "bad_kernel": ["--model", "DLinear", "--moving_avg", "0"],
        "pct_start": ["--pct_start", "2"],
        "too_short": [],
    }[case]
    argv += [*extra, "--out", "/dev/null" if case == "out_dev_null" else str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "ignored" not in err[0] and "learning rate" not in err[0]


def test_the_notes_are_said_before_training_and_kept_in_run_log(tmp_path, synth_csv, capsys):
    csv = synth_csv(n=400, channels=2)
    argv = ["timellm", "--model", "DLinear", "--data", "custom", "--root_path", str(csv.parent)]
    argv += ["--data_path", csv.name, "--seq_len", "32", "--pred_len", "8", "--quiet"]
    argv += ["--train_epochs", "1", "--llm_model", "BERT", "--itr", "2"]
    argv += ["--out", str(tmp_path / "r")]
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    ignored = "ignored (no meaning here): --llm_model (DLinear has no LLM)"
    assert err.count(ignored) == 1  # --itr 2: said once on the console
    assert err[0].startswith("learning rate: --model DLinear")
    for run in ("r_itr0", "r_itr1"):  # each run folder tells what it was made from
        log = (tmp_path / run / "run.log").read_text(encoding="utf-8").splitlines()
        said = [i for i, line in enumerate(log) if line.endswith(ignored)]
        fitted = [i for i, line in enumerate(log) if "dlinear epoch 1" in line]
        assert len(said) == 1 and said[0] < fitted[0], log
