"""Configs are refused before any model loads, naming the key and the nearest valid one."""

import dataclasses

import pytest

from gad.config import ConfigError, load_config, save_config, to_dict


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_papers(tmp_path, teacher_set):
    cfg = load_config(None, [f"data.train_file={teacher_set}"], stage="train")
    assert (cfg.rollout.n, cfg.rollout.temperature, cfg.generator.lr, cfg.discriminator.lr) == (8, 0.8, 1e-6, 1e-6)
    assert (cfg.generator.grad_clip, cfg.algorithm.kl_coef, cfg.train.batch_size) == (0.2, 0.001, 256)
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length, cfg.algorithm.disc_only_steps) == (2048, 1536, 10)
    assert cfg.max_new_tokens == 1536


def test_typo_names_nearest_key(tmp_path, teacher_set):
    p = write(tmp_path, f"data:\n  train_file: {teacher_set}\nrollout:\n  temprature: 0.7\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'rollout.temprature'; did you mean 'rollout.temperature'"):
        load_config(p, stage="train")
    with pytest.raises(ConfigError, match="unknown key 'trian.batch_size'; did you mean 'train.batch_size'"):
        load_config(None, [f"data.train_file={teacher_set}", "trian.batch_size=4"], stage="train")


def test_wrong_type_is_refused(teacher_set):
    with pytest.raises(ConfigError, match="'rollout.n' must be int, got str 'eight'"):
        load_config(None, [f"data.train_file={teacher_set}", "rollout.n=eight"], stage="train")
    with pytest.raises(ConfigError, match="'train.report_to' must be list"):
        load_config(None, [f"data.train_file={teacher_set}", "train.report_to=3"], stage="train")
    with pytest.raises(ConfigError, match="train.report_to: unknown tracker 'neptune'; use any of tensorboard, wandb"):
        load_config(None, [f"data.train_file={teacher_set}", "train.report_to=[wandb, neptune]"], stage="train")
    cfg = load_config(None, [f"data.train_file={teacher_set}", "train.report_to=wandb,mlflow"], stage="train")
    assert cfg.train.report_to == ["wandb", "mlflow"]


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path, teacher_set):
    p = write(tmp_path, f"data:\n  train_file: {teacher_set}\ngenerator:\n  lr: 1e-6\n")
    assert load_config(p, stage="seqkd").generator.lr == 1e-6


def test_impossible_values(teacher_set):
    base = [f"data.train_file={teacher_set}"]
    with pytest.raises(ConfigError, match="does not divide train.batch_size 6 into whole groups"):
        load_config(None, base + ["train.batch_size=6", "algorithm.mini_batch_size=4"], stage="train")
    with pytest.raises(ConfigError, match="does not divide a mini-batch of 4 prompts x 8 samples = 32 sequences"):
        load_config(None, base + ["train.batch_size=8", "algorithm.mini_batch_size=4", "train.micro_batch_size=5"], stage="train")
    with pytest.raises(ConfigError, match="at least 2 samples per prompt"):
        load_config(None, base + ["rollout.n=1"], stage="train")
    with pytest.raises(ConfigError, match="discriminator.loss: must be 'bt' or 'bce'"):
        load_config(None, base + ["discriminator.loss=hinge"], stage="warmup")
    with pytest.raises(ConfigError, match="data.train_file: no such file"):
        load_config(None, ["data.train_file=/nonexistent.jsonl"], stage="seqkd")
    # several problems are reported together
    with pytest.raises(ConfigError, match=r"(?s)generator\.lr.*rollout\.temperature") as e:
        load_config(None, base + ["generator.lr=0", "rollout.temperature=-1"], stage="train")
    assert "generator.lr" in str(e.value) and "rollout.temperature" in str(e.value)


def test_bad_yaml_names_the_file(tmp_path):
    p = write(tmp_path, "data: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_config(p)


KEY = "sk-proj-" + "Zq4xT9mB2vL7nR1cW8yK3pH6" + "dF0sJ5gA"  # the shape of an OpenAI key (made up)


@pytest.mark.parametrize("planted", [
    KEY,
    "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",  # a Hugging Face token's shape
    "Xk9" + "Lq2Vz7Rb4Nw8Tc1Md6Hf3Jp5Gs0Ye2Ua",  # a long random token with no known prefix
    "sk-ant-api03-" + "Zq4xT9mB2vL7nR1cW8yK3pH6dF0sJ5gA-Zq4xT9mB2vL7_nR1cW8yK3pH6",  # an Anthropic key's shape
    "AKIA" + "Z7Q4X9TB2VL7NR1C",  # an AWS access key id
])
def test_resolved_config_redacts_secret_values_and_nothing_else(teacher_set, planted):
    # A key pasted into the wrong field (here the model) must not reach config.yaml; every other
    # value, including keys whose names contain "token" or "key", is written as it is.
    cfg = load_config(None, [f"data.train_file={teacher_set}", f"generator.model={planted}",
                             "rollout.max_new_tokens=77"], stage="train", check_files=False)
    d = to_dict(cfg)
    assert d["generator"]["model"] == "<redacted>"
    d["generator"]["model"] = cfg.generator.model
    assert d == dataclasses.asdict(cfg)
    assert d["rollout"]["max_new_tokens"] == 77


def test_values_registered_as_secrets_are_redacted(teacher_set):
    from gad.secrets import register_secret

    register_secret("correct-horse-battery-staple")  # not key-shaped, but the user's key
    cfg = load_config(None, [f"data.train_file={teacher_set}", "train.output_dir=correct-horse-battery-staple"],
                      stage="train", check_files=False)
    assert to_dict(cfg)["train"]["output_dir"] == "<redacted>"


@pytest.mark.parametrize("value", [
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "runs/gad/checkpoints/step-000400/generator",
    "0123456789abcdef0123456789abcdef01234567",  # a commit hash: lower-case hex, not a key
    "my_very_long_local_model_folder_name_v2",
    "nvidia/Llama-3_1-Nemotron-Ultra-253B-v1",
    "runs/Qwen2-7B-Instruct_GAD_lr1e-6_bs256_seed0",
    "runs/gad/Llama3_8B_to_Qwen2_5_1_5B_seqkd_Run2",
    "data/LMSYS_Chat_1M_teacher_GPT5_chat_responses_v2",
    "data/hf_train_set_2024_v1.jsonl",
    "runs/sk-learn-baseline-2024-05-01",
    "runs/ghp_experiment_number_2_of_the_week",
])
def test_ordinary_values_are_not_mistaken_for_secrets(teacher_set, value):
    cfg = load_config(None, [f"data.train_file={teacher_set}", f"generator.model={value}"],
                      stage="train", check_files=False)
    assert to_dict(cfg)["generator"]["model"] == value


def test_saved_config_loads_back_equal(tmp_path, teacher_set):
    # save_config is what the trainer writes to RUN/config.yaml (and what the report shows).
    cfg = load_config(None, [f"data.train_file={teacher_set}", "rollout.max_new_tokens=123", "generator.lr=3e-6",
                             "discriminator.model=tiny", "train.epochs=2.5", "train.report_to=[]"],
                      stage="warmup")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_a_byte_order_mark_is_read(tmp_path, teacher_set):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + f"data:\n  train_file: {teacher_set}\nrollout:\n  n: 4\n".encode())
    assert load_config(p, stage="train").rollout.n == 4


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path, teacher_set):
    p = tmp_path / "c.yaml"
    p.write_bytes(f"data:\n  train_file: {teacher_set}\n".encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: not UTF-8 text \(byte 0xe9 at column 6\)"):
        load_config(p, stage="train")


def test_a_folder_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match=r": is a folder, not a file"):
        load_config(tmp_path, stage="train")


def test_memory_switches_are_checked(teacher_set):
    """The memory knobs default to today's behaviour and refuse values that mean nothing."""
    base = [f"data.train_file={teacher_set}"]
    cfg = load_config(None, base, stage="train")
    assert (cfg.train.gradient_checkpointing, cfg.rollout.micro_batch_size, cfg.train.reference_dtype) == (False, 0, "fp32")
    with pytest.raises(ConfigError, match=r"rollout.micro_batch_size: must be >= 0 \(0 = all of a step's prompts"):
        load_config(None, base + ["rollout.micro_batch_size=-1"], stage="train")
    with pytest.raises(ConfigError, match="train.reference_dtype: must be 'fp32' or 'bf16', got 'fp16'"):
        load_config(None, base + ["train.reference_dtype=fp16"], stage="train")
    with pytest.raises(ConfigError, match="'train.gradient_checkpointing' must be bool, got str 'maybe'"):
        load_config(None, base + ["train.gradient_checkpointing=maybe"], stage="train")
    cfg = load_config(None, base + ["train.gradient_checkpointing=true", "rollout.micro_batch_size=2",
                                    "train.reference_dtype=bf16"], stage="train")
    assert (cfg.train.gradient_checkpointing, cfg.rollout.micro_batch_size, cfg.train.reference_dtype) == (True, 2, "bf16")


def test_fidelity_options_default_and_are_checked(teacher_set):
    """The options that mirror the official scripts: weight decay 0.01 and the k3 clamp at 10 by
    default (verl's); long prompts dropped, plain cross-entropy and weights-only init by default."""
    base = [f"data.train_file={teacher_set}"]
    cfg = load_config(None, base, stage="train")
    assert (cfg.generator.weight_decay, cfg.discriminator.weight_decay, cfg.algorithm.kl_clamp) == (0.01, 0.01, 10.0)
    assert (cfg.data.long_prompts, cfg.generator.sft_temperature, cfg.train.init_state) == ("drop", 1.0, "weights")
    for item, message in [
        ("data.long_prompts=middle", "data.long_prompts: must be 'drop', 'left' or 'right', got 'middle'"),
        ("algorithm.kl_clamp=-1", "algorithm.kl_clamp: must be >= 0"),
        ("generator.sft_temperature=0", "generator.sft_temperature: must be > 0"),
        ("discriminator.weight_decay=-0.1", "discriminator.weight_decay: must be >= 0"),
        ("train.init_state=optimizer", "train.init_state: must be 'weights' or 'all', got 'optimizer'"),
        ("train.init_state=all", "train.init_state: 'all' continues train.init_from, which is empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, base + [item], stage="train")


def test_chat_template_kwargs_from_yaml_and_command_line_and_back(tmp_path, teacher_set):
    p = tmp_path / "c.yaml"
    p.write_text(f"data:\n  train_file: {teacher_set}\n  chat_template_kwargs: {{enable_thinking: false}}\n")
    cfg = load_config(p, stage="train")
    assert cfg.data.chat_template_kwargs == {"enable_thinking": False}
    assert load_config(None, [f"data.train_file={teacher_set}"], stage="train").data.chat_template_kwargs == {}
    cli = load_config(p, ["data.chat_template_kwargs={enable_thinking: true, reasoning_effort: low}"], stage="train")
    assert cli.data.chat_template_kwargs == {"enable_thinking": True, "reasoning_effort": "low"}
    save_config(cli, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cli
    for bad, said in [("data.chat_template_kwargs=true", "'data.chat_template_kwargs' must be a mapping"),
                      ("data.chat_template_kwargs={1: x}", "'data.chat_template_kwargs' keys must be strings"),
                      ("data.chat_template_kwargs={tokenize: true}", "'tokenize' is an argument of apply_chat")]:
        with pytest.raises(ConfigError, match=said):
            load_config(None, [f"data.train_file={teacher_set}", bad], stage="train")


def test_validation_needs_held_out_data(teacher_set):
    base = [f"data.train_file={teacher_set}"]
    with pytest.raises(ConfigError, match="eval.every: validation needs held-out data: set data.eval_file or data.eval_fraction"):
        load_config(None, base + ["eval.every=10"], stage="train")
    with pytest.raises(ConfigError, match=r"data.eval_fraction: must be in \[0, 1\)"):
        load_config(None, base + ["data.eval_fraction=1.5"], stage="train")
    with pytest.raises(ConfigError, match="data.eval_file: no such file"):
        load_config(None, base + ["data.eval_file=/nonexistent.jsonl"], stage="train")
    cfg = load_config(None, base + ["eval.every=10", "data.eval_fraction=0.1"], stage="train")
    assert (cfg.eval.every, cfg.eval.prompts, cfg.data.eval_fraction) == (10, 64, 0.1)
