"""What an Extractor carries into a Spark closure: the checkpoint's path or URI and the store's non-secret
options, never credentials (those come from each executor's environment)."""
from __future__ import annotations

import pickle

import pytest

from inference.extract import Extractor
from lfm.names import BadInput


@pytest.mark.parametrize("secret", ["aws_secret_access_key", "AWS_ACCESS_KEY_ID", "aws_session_token"])
def test_credentials_in_the_store_options_are_refused(secret):
    with pytest.raises(BadInput, match="credentials"):
        Extractor("s3://bucket/models/v1", storage={"aws_endpoint": "http://127.0.0.1:9000", secret: "x"})


def test_a_uri_is_kept_as_given_and_a_local_path_made_absolute(tmp_path, monkeypatch):
    options = {"aws_endpoint": "http://127.0.0.1:9000", "aws_allow_http": "true"}
    remote = pickle.loads(pickle.dumps(Extractor("s3://bucket/models/v1", storage=options)))
    assert remote.model_dir == "s3://bucket/models/v1" and remote.storage == options
    monkeypatch.chdir(tmp_path)
    assert Extractor("registry/v1").model_dir == str(tmp_path.resolve() / "registry" / "v1")
