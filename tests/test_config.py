"""graph.yaml: paths resolve against the file; unusable fields are one-line errors naming them."""

from pathlib import Path

import pytest
import yaml

from meshing_core.config import ConfigError, load_config, write_config


def _write(tmp_path: Path, **changes) -> Path:
    path = write_config(
        tmp_path,
        name="g",
        graph_file="graph.sqlite",
        watershed="watershed",
        mesh_dir="graphene_meshes",
        mip=0,
        max_error=10,
        chunk_size=(32, 32, 16),
        n_layers=5,
        spatial_bits=10,
    )
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    path.write_text(yaml.safe_dump(data))
    return path


def test_relative_paths_resolve_against_the_file(tmp_path):
    config = load_config(_write(tmp_path))
    assert config.watershed == "file://" + str((tmp_path / "watershed").resolve())
    assert config.graph_path.endswith("/graph.sqlite")
    assert config.mesh_cloudpath == config.watershed + "/graphene_meshes"
    assert load_config(tmp_path).source == config.source  # a folder means its graph.yaml


def test_urls_are_kept(tmp_path):
    config = load_config(_write(tmp_path, watershed="gs://bucket/ws"))
    assert config.mesh_cloudpath == "gs://bucket/ws/graphene_meshes"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x"])
def test_mesh_dir_must_be_one_folder_inside_the_watershed(tmp_path, bad):
    with pytest.raises(ConfigError, match="mesh.dir"):
        load_config(_write(tmp_path, mesh__dir=bad))


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"chunk_size": [32, 0, 16]}, "chunk_size"),
        ({"mesh__max_error": -1}, "mesh.max_error"),
        ({"n_layers": 1}, "n_layers"),
        ({"batches": [1, 2]}, "batches"),
        ({"layers": "big"}, "layers"),
        ({"graph": {"backend": "bigtable", "path": "x"}}, "graph.backend"),
    ],
)
def test_bad_fields_are_named(tmp_path, changes, field):
    with pytest.raises(ConfigError, match=field) as err:
        load_config(_write(tmp_path, **changes))
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "graph.yaml"
    bad.write_text("graph: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _with(tmp_path: Path, edit) -> Path:
    """graph.yaml as write_config writes it, then changed by ``edit(data)``."""
    path = _write(tmp_path)
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda d: d.update(chunk_sizes=[1, 2, 3]), "'chunk_sizes'"),
        (lambda d: d["graph"].update(kind="x"), "'graph.kind'"),
        (lambda d: d["mesh"].update(max_eror=3), "'mesh.max_eror'"),
        (lambda d: d["batches"].update(chunk_per_batch=4), "'batches.chunk_per_batch'"),
        (lambda d: d["layers"]["default"].update(retry=1), "'layers.default.retry'"),
        (lambda d: d["layers"].update({"3": {"pol": "big"}}), "'layers.3.pol'"),
        (lambda d: d["layers"].update({"1": {"pool": "big"}}), "'layers.1'"),
        (lambda d: d["layers"].update({"big": {}}), "'layers.big'"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(tmp_path, edit, key):
    path = _with(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path.resolve()}: unknown key {key} (known: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    "section,key,value,fix",
    [
        ("batches", "chunks_per_batch", "lots", "whole number >= 1"),
        ("batches", "voxels_per_batch", 0, "whole number >= 1"),
        ("batches", "max_map_length", 2.5, "whole number >= 1"),
        ("batches", "lease_ttl_s", "soon", "seconds > 0"),
        ("layer", "retries", "two", "whole number >= 0"),
        ("layer", "timeout_s", -1, "seconds > 0"),
        ("layer", "pool", "", "non-empty name"),
        ("layer", "memory", "lots", "Kubernetes quantity"),
        ("layer", "visibility_timeout_s", 50000, "<= 43200"),
    ],
)
def test_settings_of_the_wrong_type_are_refused(tmp_path, section, key, value, fix):
    def edit(data):
        if section == "batches":
            data["batches"][key] = value
        else:
            data["layers"]["3"] = {key: value}

    where = f"batches.{key}" if section == "batches" else f"layers.3.{key}"
    path = _with(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path.resolve()}: {where} is {value!r}: give a ")
    assert fix in message and "\n" not in message


def test_defaults_are_filled_in_and_overrides_merge(tmp_path):
    def edit(data):
        data["batches"] = {"chunks_per_batch": 7}
        data["layers"] = {"default": {"retries": 4}, 5: {"pool": "big", "cpu": "500m"}}

    config = load_config(_with(tmp_path, edit))
    assert config.batches == {
        "voxels_per_batch": 2**27,
        "max_map_length": 1024,
        "lease_ttl_s": 900,
        "chunks_per_batch": 7,
    }
    five = config.layer_settings(5)
    assert five["retries"] == 4 and five["pool"] == "big" and five["cpu"] == "500m"
    assert config.layer_settings(2)["pool"] == "default_pool"
    assert config.layer_settings(2)["visibility_timeout_s"] == 600


def test_lease_s_is_read_as_visibility_timeout_s_with_a_warning(tmp_path, caplog):
    def edit(data):
        data["layers"]["default"].pop("visibility_timeout_s")
        data["layers"]["default"]["lease_s"] = 1200

    with caplog.at_level("WARNING", logger="meshing_core.config"):
        config = load_config(_with(tmp_path, edit))
    assert config.layer_settings(3)["visibility_timeout_s"] == 1200
    assert "lease_s" not in config.layer_settings(3)
    assert [r.getMessage() for r in caplog.records] == [
        "layers.default.lease_s is now visibility_timeout_s: rename it in graph.yaml"
    ]


def test_write_config_writes_the_new_names(tmp_path):
    data = yaml.safe_load(_write(tmp_path).read_text())
    assert "visibility_timeout_s" in data["layers"]["default"]
    assert "lease_s" not in data["layers"]["default"]


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["status"],
        ["mesh", "--layer", "2"],
        ["setup"],
        ["info"],
        ["export-mesh", "--point", "1", "1", "1", "--out", "x.ply"],
    ],
)
def test_every_command_refuses_an_unknown_key_in_one_line(tmp_path, command):
    from cli_support import run_cli

    path = _with(tmp_path, lambda d: d["batches"].update(chunk_per_batch=4))
    proc = run_cli(*command, "--graph", str(path), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "unknown key 'batches.chunk_per_batch'" in lines[0]
    assert proc.stdout == ""
