"""Locations, storage options and one-line storage errors (gpuds/storage.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gpuds
from gpuds.errors import ConfigError, StoreError
from gpuds.storage import location, parse_storage_options, storage_error

from .conftest import S3, only_line


def test_paths_and_urls_parse_into_locations(tmp_path: Path):
    assert location(tmp_path / "x.zarr").path == tmp_path / "x.zarr"
    assert location(f"file://{tmp_path}/x.zarr").path == tmp_path / "x.zarr"
    s3 = location("s3://bucket/runs/x.zarr/", {"region": "eu-west-1"})
    assert (s3.url, s3.bucket, s3.key, s3.name, s3.service) == (
        "s3://bucket/runs/x.zarr", "bucket", "runs/x.zarr", "x.zarr", "s3"
    )  # fmt: skip
    assert s3.storage_options == {"region": "eu-west-1"}
    assert location("gs://b/x").service == "gs" and location("az://c/x").service == "az"
    assert location("memory://x.zarr").service == "memory"  # read through zarr's fsspec store
    with pytest.raises(ConfigError, match="unknown URL scheme 'nope'"):
        location("nope://b/x")
    with pytest.raises(ConfigError, match="names no bucket"):
        location("s3:///x")


def test_storage_options_parse_key_value_texts():
    assert parse_storage_options(["Endpoint=http://h:1", "allow_http=true"]) == {
        "endpoint": "http://h:1",
        "allow_http": "true",
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_storage_options(["region"])


def test_an_unknown_storage_option_is_a_config_error_naming_it(s3: S3):
    with pytest.raises(ConfigError, match=r"invalid storage options.*no_such_key"):
        gpuds.open(f"{s3.url}/x.zarr", storage_options={"no_such_key": "1"})


def test_storage_options_override_the_environment(s3: S3, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # a closed port
    np.save(tmp_path / "x.npy", np.arange(6).reshape(3, 2))
    out = f"{s3.url}/x.zarr"
    options = {"endpoint": s3.endpoint}
    gpuds.ingest([tmp_path / "x.npy"], out, storage_options=options)
    ds = gpuds.open(out, storage_options=options)
    np.testing.assert_array_equal(ds.arrays["x"][:], np.arange(6).reshape(3, 2))


def test_storage_options_on_the_command_line(cli, s3: S3, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # a closed port
    np.save(tmp_path / "x.npy", np.arange(6))
    url = f"{s3.url}/x.zarr"
    option = ("--storage-option", f"endpoint={s3.endpoint}")
    assert cli("ingest", tmp_path / "x.npy", "-o", url, "--quiet", *option).code == 0
    result = cli("inspect", url, "--json", *option)
    assert result.code == 0 and result.json()["num_samples"] == 6
    bad = cli("inspect", url, "--storage-option", "endpoint")
    assert bad.code == 1 and "KEY=VALUE" in only_line(bad.err)


def test_the_aws_shared_credentials_file_gives_keys(s3: S3, tmp_path: Path, monkeypatch):
    """obstore reads no profile; gpuds reads the profile's static keys (AWS_PROFILE)."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[work]\naws_access_key_id = testing\naws_secret_access_key = x\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "work")
    np.save(tmp_path / "x.npy", np.arange(3))
    gpuds.ingest([tmp_path / "x.npy"], f"{s3.url}/x.zarr")
    assert len(gpuds.open(f"{s3.url}/x.zarr")) == 3
    monkeypatch.setenv("AWS_PROFILE", "missing")
    with pytest.raises(ConfigError, match="AWS profile 'missing' is not in"):
        gpuds.open(f"{s3.url}/x.zarr")


# -- errors in one line: exit 1, the URL and the fix named, nothing left that looks complete ---


def _ingest(cli, tmp_path: Path, out: str, *extra: str):  # type: ignore[no-untyped-def]
    np.save(tmp_path / "x.npy", np.arange(10))
    return cli("ingest", tmp_path / "x.npy", "-o", out, "--quiet", *extra)


def test_a_missing_bucket_is_one_line(cli, s3: S3, tmp_path: Path):
    url = "s3://no-such-bucket-here/x.zarr"
    for result in (_ingest(cli, tmp_path, url), cli("inspect", url)):
        assert result.code == 1
        line = only_line(result.err)
        assert url in line and "bucket 'no-such-bucket-here' does not exist" in line, line


def test_no_credentials_is_one_line(cli, s3: S3, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    url = f"{s3.url}/x.zarr"
    result = _ingest(cli, tmp_path, url)
    assert result.code == 1
    line = only_line(result.err)
    assert url in line and "no credentials found" in line and "AWS_ACCESS_KEY_ID" in line, line
    assert s3.keys() == []


def test_a_wrong_endpoint_is_one_line(cli, s3: S3, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    url = f"{s3.url}/x.zarr"
    result = _ingest(cli, tmp_path, url)
    assert result.code == 1
    line = only_line(result.err)
    assert url in line and "cannot reach http://127.0.0.1:9" in line, line
    assert "AWS_ENDPOINT_URL" in line


def test_denied_or_rejected_credentials_are_one_line(cli, s3: S3, tmp_path: Path, monkeypatch):
    """moto checks IAM when asked: a user without a policy is denied, an unknown key refused."""
    import boto3
    from moto.core.authorization import enable_iam_authentication

    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1")
    user = f"reader-{s3.bucket}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    url = f"{s3.url}/x.zarr"
    with enable_iam_authentication():
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        denied = _ingest(cli, tmp_path, url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
        rejected = cli("inspect", url)
    assert denied.code == 1 and rejected.code == 1
    line = only_line(denied.err)
    assert url in line and "access denied" in line and "policy" in line, line
    line = only_line(rejected.err)
    assert url in line and "rejected the credentials" in line, line
    assert s3.keys() == []


def test_storage_errors_name_the_url_and_the_fix():
    loc = location("s3://b/x.zarr")
    unreachable = OSError("Generic S3 error: ... HTTP error: error sending request")
    assert "cannot reach" in str(storage_error(loc, unreachable))
    other = RuntimeError("something else\nwith detail")
    assert str(storage_error(loc, other)) == ("s3://b/x.zarr: RuntimeError: something else")
    assert isinstance(storage_error(loc, other), StoreError)
