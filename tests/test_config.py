import pytest

from jaxft import config as config_lib
from jaxft.errors import UserError


def test_rotten_tomatoes_experiment_loads_with_strategy_arg():
    config = config_lib.load_experiment("experiments/rotten_tomatoes.py")
    assert config.strategy.name == "full"
    assert config.data.max_length == 64 and config.train.batch_size == 32
    assert config_lib.load_experiment("experiments/rotten_tomatoes.py:frozen").strategy.name == (
        "frozen"
    )


def test_overrides_take_the_type_of_the_default():
    config = config_lib.defaults()
    config_lib.apply_overrides(
        config,
        [
            ("optim.lr", "3e-5"),
            ("train.epochs", "2"),
            ("train.progress", "false"),
            ("data.buckets", "16,32"),
            ("optim.weight_decay", "0"),
        ],
    )
    assert config.optim.lr == 3e-5
    assert config.train.epochs == 2 and isinstance(config.train.epochs, int)
    assert config.train.progress is False
    assert config.data.buckets == (16, 32)
    assert config.optim.weight_decay == 0.0 and isinstance(config.optim.weight_decay, float)


def test_unknown_key_names_the_closest_valid_keys():
    with pytest.raises(UserError, match=r"unknown config key 'optim\.lrr'.*optim\.lr"):
        config_lib.apply_overrides(config_lib.defaults(), [("optim.lrr", "1e-4")])
    with pytest.raises(UserError, match=r"'train\.batchsize'.*train\.batch_size"):
        config_lib.apply_overrides(config_lib.defaults(), [("train.batchsize", "8")])


def test_unknown_key_in_an_experiment_file_is_an_error(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        "import ml_collections\n"
        "def get_config(arg=None):\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.optim = ml_collections.ConfigDict({'learning_rate': 1e-3})\n"
        "    return c\n"
    )
    with pytest.raises(UserError, match="optim.learning_rate"):
        config_lib.load_experiment(str(path))


def test_wrong_value_type_is_an_error():
    with pytest.raises(UserError, match="train.epochs.*int"):
        config_lib.apply_overrides(config_lib.defaults(), [("train.epochs", "three")])


def test_config_json_round_trips(tmp_path):
    config = config_lib.load_experiment("experiments/rotten_tomatoes.py")
    (tmp_path / "config.json").write_text(config_lib.to_json(config))
    assert config_lib.from_json_file(tmp_path / "config.json") == config


def test_regex_tuple_override_from_the_command_line():
    config = config_lib.defaults()
    config_lib.apply_overrides(
        config,
        [
            ("strategy.lora.targets", '("attention/(query|key|value|output)$",)'),
            ("strategy.name", "lora+bitfit"),
        ],
    )
    assert config.strategy.lora.targets == ("attention/(query|key|value|output)$",)
    assert config.strategy.name == "lora+bitfit"


def test_a_single_value_sets_a_one_item_tuple():
    c = config_lib.defaults()
    config_lib.apply_overrides(c, [("data.buckets", "48")])
    assert c.data.buckets == (48,)
