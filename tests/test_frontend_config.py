"""The query frontend's configuration rules, checked in process (no HTTP needed)."""

from __future__ import annotations

import pytest

from clipper.frontend.config import QueryFrontendConfig
from clipper.frontend.query import AppSpec, ModelSpec, QueryFrontend


@pytest.fixture
def frontend():
    frontend = QueryFrontend(QueryFrontendConfig(port=0, rpc_port=0))
    yield frontend
    frontend.engine.close()


def test_an_app_cannot_link_a_model_of_another_input_type(frontend):
    frontend.add_model(ModelSpec("m", "1", "doubles"))
    with pytest.raises(ValueError, match="incompatible input_type 'doubles'.*input_type 'integers'"):
        frontend.add_app(AppSpec("a", "ints", 1000, models=["m"]))
    assert "a" not in frontend.server.apps


def test_a_new_version_must_keep_the_linked_apps_input_type(frontend):
    frontend.add_model(ModelSpec("m", "1", "doubles"))
    frontend.add_app(AppSpec("a", "d", 1000, models=["m"]))
    with pytest.raises(ValueError, match="incompatible input_type 'strings'"):
        frontend.add_model(ModelSpec("m", "2", "strings"))
    assert frontend.current_version["m"] == "1"


def test_aliases_of_the_same_type_link(frontend):
    frontend.add_model(ModelSpec("m", "1", "ints"))
    frontend.add_app(AppSpec("a", "integers", 1000, models=["m"]))
    assert frontend.server.apps["a"].model_id == frontend.engine.model("m", "1")


def test_bad_settings_are_refused(frontend):
    with pytest.raises(ValueError, match="unknown input type"):
        frontend.add_app(AppSpec("a", "tensors", 1000))
    with pytest.raises(ValueError, match="latency_slo_micros"):
        frontend.add_app(AppSpec("a", "doubles", 0))
    with pytest.raises(ValueError, match="batch_size"):
        frontend.add_model(ModelSpec("m", "1", "doubles", batch_size=0))
