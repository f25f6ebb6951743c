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
