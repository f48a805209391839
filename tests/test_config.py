"""Configs are refused before any model loads, naming the key and the nearest valid one."""

import pytest

from gad.config import Config, ConfigError, load_config, to_dict


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
    with pytest.raises(ConfigError, match="'train.tensorboard' must be bool"):
        load_config(None, [f"data.train_file={teacher_set}", "train.tensorboard=3"], stage="train")


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


def test_resolved_config_has_no_secrets():
    d = to_dict(Config())
    assert "data" in d and d["rollout"]["n"] == 8
