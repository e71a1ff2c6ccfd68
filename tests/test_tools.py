"""Tools: the registry, errors as observations, @tool schemas, graph tools and BFCL import."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Literal

import pytest

import kag
from kag.cli import main as kag_main
from kag.schema import Tool
from selfplay.graph_tools import default_registry, graph_tools
from selfplay.tooldefs import import_tools, to_json_schema, tool_from_definition
from selfplay.tools import Observation, ToolError, ToolRegistry, tool
from tests.data import DATA_DIR

BFCL = DATA_DIR / "bfcl"
BFCL_FILES = sorted(p for p in BFCL.glob("BFCL_v4_*.json") if "multi_turn" not in p.name)
BFCL_MULTI_TURN_DOCS = sorted((BFCL / "multi_turn_func_doc").glob("*.json"))


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


@tool(version="2", domain="weather")
def forecast(city: str, days: int = 3, unit: Unit = Unit.C, hourly: bool | None = None) -> dict:
    """Forecast the weather of a city.

    More text that is not the summary.

    Args:
        city: the city's name.
        days: how many days
            ahead (1 to 10).
        unit: temperature unit.
    """
    return {"city": city, "days": days}


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


@tool
def lookup(key: Literal["x", "y"], tags: list[str] | None = None) -> str:
    """Look a key up.

    :param key: which key.
    """
    if key == "y":
        raise ToolError("y is not stored")
    return f"value of {key}"


# --------------------------------------------------------------------------- @tool


def test_tool_decorator_derives_schema_from_signature_and_docstring():
    t = forecast.tool
    assert t.id == "forecast@2" and t.domain == "weather"
    assert t.description == "Forecast the weather of a city."
    assert t.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city's name."},
            "days": {
                "type": "integer",
                "description": "how many days ahead (1 to 10).",
                "default": 3,
            },
            "unit": {"enum": ["celsius", "fahrenheit"], "description": "temperature unit."},
            "hourly": {"type": ["boolean", "null"], "default": None},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert forecast("Oslo", days=1) == {"city": "Oslo", "days": 1}  # still a plain function
    assert t.spec()["function"]["name"] == "forecast"


def test_tool_decorator_reads_sphinx_params_literals_and_optional_lists():
    props = lookup.tool.parameters["properties"]
    assert props["key"] == {"enum": ["x", "y"], "type": "string", "description": "which key."}
    assert props["tags"] == {
        "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
        "default": None,
    }


def test_tool_decorator_rejects_functions_it_cannot_describe():
    with pytest.raises(ValueError, match="parameter 'x' has no type annotation"):

        @tool
        def untyped(x):  # noqa: ANN001
            return x

    with pytest.raises(ValueError, match=r"\*args/\*\*kwargs parameter 'rest'"):

        @tool
        def variadic(*rest: int) -> None: ...

    with pytest.raises(ValueError, match="parameter 'when'.*has no JSON schema"):

        @tool
        def dated(when: Path) -> None: ...


# --------------------------------------------------------------------------- registry


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([forecast, divide, lookup])


def test_call_runs_the_tool_and_renders_its_result_as_compact_json(registry):
    obs = registry.call("forecast", '{"city": "Oslo", "days": 5}')
    assert obs == Observation(content='{"city":"Oslo","days":5}', ok=True)
    assert registry.call("divide", {"a": 1, "b": 4}).content == "0.25"
    assert registry.call("forecast@2", '{"city": "Rome"}').ok  # by id too


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("nope", "{}", "unknown tool 'nope'; available tools: forecast, divide, lookup"),
        ("forecast@1", '{"city": "x"}', "unknown tool 'forecast@1'"),
        ("forecast", '{"city": "Oslo",', "arguments of forecast are not valid JSON"),
        ("forecast", "[1, 2]", "arguments of forecast must be a JSON object, got list"),
        ("forecast", "{}", "invalid arguments for forecast: 'city' is a required property"),
        (
            "forecast",
            '{"city": 3}',
            "invalid arguments for forecast at 'city': 3 is not of type 'string'",
        ),
        ("forecast", '{"city": "x", "unit": "kelvin"}', "at 'unit': 'kelvin' is not one of"),
        (
            "forecast",
            '{"city": "x", "extra": 1}',
            "Additional properties are not allowed ('extra' was unexpected)",
        ),
        ("divide", '{"a": 1, "b": 0}', "divide failed: ZeroDivisionError: division by zero"),
        ("lookup", '{"key": "y"}', "y is not stored"),
    ],
)
def test_every_mistake_comes_back_as_an_error_observation_never_an_exception(
    registry, name, arguments, error
):
    obs = registry.call(name, arguments)
    assert not obs.ok
    assert error in obs.error
    assert json.loads(obs.content) == {"error": obs.error}
    failed_inside_the_tool = name in ("divide", "lookup")
    assert registry.validate_call(name, arguments) == (
        None if failed_inside_the_tool else obs.error
    )


def test_validate_call_explains_invalid_calls_and_accepts_valid_ones(registry):
    assert registry.validate_call("forecast", '{"city": "Oslo"}') is None
    assert (
        registry.validate_call("divide", "")
        == "invalid arguments for divide: 'a' is a required property"
    )


def test_empty_arguments_mean_no_arguments():
    @tool
    def ping() -> str:
        """Answer pong."""
        return "pong"

    reg = ToolRegistry([ping])
    assert reg.call("ping", "").content == "pong"
    assert reg.call("ping", None).content == "pong"


def test_long_observations_are_truncated():
    @tool
    def big() -> str:
        """A lot of text."""
        return "y" * 100

    obs = ToolRegistry([big], max_observation_chars=10).call("big", "{}")
    assert obs.content == "y" * 10 + "... [truncated 90 characters]"


def test_names_are_unique_in_a_registry_unless_replaced(registry):
    other = Tool.create(name="divide", version="2", parameters={"type": "object", "properties": {}})
    with pytest.raises(
        ValueError, match="a tool named 'divide' is already registered \\(divide@1\\)"
    ):
        registry.register(other)
    registry.register(other, replace=True)
    assert registry.get("divide").id == "divide@2"
    # a definition without a callable can be offered and validated, but not run
    obs = registry.call("divide", "{}")
    assert obs.error == "tool divide@2 has no implementation here (definition only)"


def test_specs_are_openai_function_specs(registry):
    specs = registry.specs(["divide"])
    assert specs == [
        {
            "type": "function",
            "function": {
                "name": "divide",
                "description": "Divide a by b.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    with pytest.raises(KeyError, match="unknown tool 'zzz'"):
        registry.specs(["zzz"])


def test_persist_writes_tool_nodes_idempotently(graph, registry):
    assert registry.persist(graph) == 3
    assert registry.persist(graph) == 3
    stored = graph.store.get_nodes("Tool", ["forecast@2", "divide@1", "lookup@1"])
    assert [t.id for t in stored] == ["forecast@2", "divide@1", "lookup@1"]
    assert stored[0].parameters == forecast.tool.parameters
    assert graph.store.count_nodes("Tool") == 3
    again = ToolRegistry.from_store(graph)
    assert sorted(again.names) == ["divide", "forecast", "lookup"]
    assert again.validate_call("forecast", '{"city": 1}') is not None


# --------------------------------------------------------------------------- graph tools


@pytest.fixture
def world(graph):
    graph.upsert_entities(
        [
            {"id": "ada", "name": "Ada Lovelace", "type": "person"},
            {"id": "byron", "name": "Lord Byron", "type": "person"},
            {"id": "lon", "name": "London", "type": "city", "description": "capital city"},
            {"id": "uk", "name": "United Kingdom", "type": "country"},
            {"id": "lonely", "name": "Londonderry", "type": "city"},
        ]
    )
    graph.upsert_relations(
        [
            ("ada", "born_in", "lon"),
            ("byron", "born_in", "lon"),
            ("ada", "child_of", "byron"),
            ("lon", "capital_of", "uk"),
        ]
    )
    return graph


def test_graph_tools_chain_hops_through_entity_ids(world):
    reg = ToolRegistry(graph_tools(world))
    found = reg.call("search_entities", '{"query": "lovelace"}')
    assert json.loads(found.content) == {
        "query": "lovelace",
        "results": [{"id": "ada", "name": "Ada Lovelace", "type": "person"}],
    }
    assert found.touched_entity_ids == ["ada"]

    hop1 = reg.call("get_relations", '{"entity_id": "ada", "relation": "born_in"}')
    body = json.loads(hop1.content)
    assert body["entity"] == {"id": "ada", "name": "Ada Lovelace", "type": "person"}
    assert body["relations"] == [
        {"relation": "born_in", "direction": "out", "id": "lon", "name": "London", "type": "city"}
    ]
    assert hop1.touched_entity_ids == ["ada", "lon"]

    hop2 = reg.call("get_relations", json.dumps({"entity_id": body["relations"][0]["id"]}))
    assert [(r["relation"], r["id"]) for r in json.loads(hop2.content)["relations"]] == [
        ("capital_of", "uk")
    ]
    assert hop2.touched_entity_ids == ["lon", "uk"]


def test_get_relations_follows_incoming_relations_on_request(world):
    reg = ToolRegistry(graph_tools(world))
    body = json.loads(reg.call("get_relations", '{"entity_id": "lon", "direction": "in"}').content)
    assert [(r["relation"], r["direction"], r["id"]) for r in body["relations"]] == [
        ("born_in", "in", "ada"),
        ("born_in", "in", "byron"),
    ]


def test_search_puts_exact_matches_first_and_honours_the_limit(world):
    reg = ToolRegistry(graph_tools(world))
    body = json.loads(reg.call("search_entities", '{"query": "London"}').content)
    assert [r["id"] for r in body["results"]] == ["lon", "lonely"]
    body = json.loads(reg.call("search_entities", '{"query": "London", "limit": 1}').content)
    assert [r["id"] for r in body["results"]] == ["lon"]
    empty = reg.call("search_entities", '{"query": "  "}')
    assert empty.error == "query must not be empty"


def test_get_entity_and_unknown_ids(world):
    reg = ToolRegistry(graph_tools(world))
    obs = reg.call("get_entity", '{"entity_id": "lon"}')
    assert json.loads(obs.content) == {
        "id": "lon",
        "name": "London",
        "type": "city",
        "domain": "",
        "description": "capital city",
    }
    assert obs.touched_entity_ids == ["lon"]
    missing = reg.call("get_relations", '{"entity_id": "atlantis"}')
    assert not missing.ok and missing.touched_entity_ids == []
    assert missing.error == "no entity with id 'atlantis'; use search_entities to find ids"


def test_get_relations_says_when_the_list_is_cut(world):
    reg = ToolRegistry(graph_tools(world, max_results=1))
    body = json.loads(reg.call("get_relations", '{"entity_id": "ada"}').content)
    assert len(body["relations"]) == 1 and body["truncated"] is True


def test_default_registry_has_graph_tools_and_python(world):
    reg = default_registry(world)
    assert reg.names == ["search_entities", "get_relations", "get_entity", "python"]
    assert default_registry(world, sandbox=None).names == [
        "search_entities",
        "get_relations",
        "get_entity",
    ]


# --------------------------------------------------------------------------- definitions and BFCL


def test_bfcl_types_map_to_json_schema():
    schema = {
        "type": "dict",
        "properties": {
            "x": {"type": "float"},
            "pair": {"type": "tuple", "items": {"type": "integer"}},
            "blob": {"type": "any", "description": "anything"},
            "nested": {"type": "dict", "properties": {"flag": {"type": "boolean"}}},
        },
    }
    assert to_json_schema(schema, "t") == {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "pair": {"type": "array", "items": {"type": "integer"}},
            "blob": {"description": "anything"},
            "nested": {"type": "object", "properties": {"flag": {"type": "boolean"}}},
        },
    }
    with pytest.raises(ValueError, match=r"tool 'f' parameters.x: unknown type 'decimal'"):
        tool_from_definition(
            {"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "decimal"}}}}
        )


def test_bfcl_simple_python_imports_400_definitions_of_370_names(sqlite_url):
    path = BFCL / "BFCL_v4_simple_python.json"
    with kag.open(sqlite_url) as g:
        report = import_tools(g, path, on_conflict="first")
        assert (report.definitions, report.tools, report.duplicates, report.conflicts) == (
            400,
            370,
            0,
            30,
        )
        tool = g.store.get_nodes("Tool", ["calculate_triangle_area@1"])[0]
        assert tool.parameters["type"] == "object"
        assert tool.parameters["required"] == ["base", "height"]
    with kag.open(sqlite_url) as g:
        # default: every distinct definition kept, later ones under a content-hash version
        report = import_tools(g, path)
        assert (report.tools, report.conflicts) == (400, 30)
        assert g.store.count_nodes("Tool") == 400
        assert import_tools(g, path).tools == 400
        assert g.store.count_nodes("Tool") == 400  # re-import is idempotent


def test_all_bfcl_definitions_import_as_1395_names_and_2478_distinct_tools(tmp_path):
    files = BFCL_FILES + BFCL_MULTI_TURN_DOCS
    with kag.open(f"sqlite:///{tmp_path / 'first.db'}") as g:
        report = import_tools(g, files, on_conflict="first")
        assert (report.files, report.definitions, report.tools) == (14, 6241, 1395)
        assert g.store.count_nodes("Tool") == 1395
        mkdir = g.store.get_nodes("Tool", ["mkdir@1"])[0]
        assert "response" in mkdir.props
    with kag.open(f"sqlite:///{tmp_path / 'version.db'}") as g:
        report = import_tools(g, files)
        assert report.tools == 2478
        assert (report.duplicates, report.conflicts) == (3763, 1083)
        assert g.store.count_nodes("Tool") == 2478


def test_conflicting_definitions_can_be_refused(sqlite_url):
    with kag.open(sqlite_url) as g, pytest.raises(ValueError) as err:
        import_tools(g, BFCL / "BFCL_v4_simple_python.json", on_conflict="error")
    assert str(err.value).endswith(
        "BFCL_v4_simple_python.json:7: tool 'solve_quadratic@1' is defined differently at "
        f"{BFCL / 'BFCL_v4_simple_python.json'}:6; use on_conflict='version' (--on-conflict version) or 'first'"
    )


def test_an_invalid_schema_is_rejected_naming_the_tool_and_nothing_is_written(sqlite_url, tmp_path):
    good = {
        "name": "ok_tool",
        "description": "fine",
        "parameters": {"type": "dict", "properties": {}},
    }
    bad = {
        "name": "broken_tool",
        "parameters": {"type": "dict", "properties": {"n": {"type": "integer", "minimum": "zero"}}},
    }
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with kag.open(sqlite_url) as g:
        with pytest.raises(
            ValueError,
            match=r"tools.jsonl:2: tool 'broken_tool': invalid parameters schema at 'properties/n/minimum'",
        ):
            import_tools(g, path)
        assert g.store.count_nodes("Tool") == 0

    path.write_text(
        json.dumps(
            {"name": "req", "parameters": {"type": "dict", "properties": {}, "required": ["x"]}}
        )
    )
    with (
        kag.open(sqlite_url) as g,
        pytest.raises(
            ValueError, match="tool 'req'.*required names \\['x'\\] not all in 'properties'"
        ),
    ):
        import_tools(g, path)


def test_bfcl_multi_turn_entries_point_to_the_function_docs(sqlite_url):
    with (
        kag.open(sqlite_url) as g,
        pytest.raises(ValueError, match="import the files in multi_turn_func_doc/ instead"),
    ):
        import_tools(g, BFCL / "BFCL_v4_multi_turn_base.json")


def test_openai_specs_round_trip_through_import(sqlite_url, tmp_path):
    specs = ToolRegistry([forecast, divide]).specs()
    path = tmp_path / "openai_tools.json"
    path.write_text(json.dumps({"tools": specs}))
    with kag.open(sqlite_url) as g:
        report = import_tools(g, path, version="2")
        assert report.tool_ids == ["divide@2", "forecast@2"]
        stored = {t.name: t for t in g.store.get_nodes("Tool", report.tool_ids)}
    assert [stored[s["function"]["name"]].spec() for s in specs] == specs


def test_kag_import_tools_command(sqlite_url, tmp_path, capsys):
    path = BFCL / "multi_turn_func_doc" / "math_api.json"
    assert kag_main(["import", "tools", str(path), "--graph", sqlite_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["definitions"], out["tools"], out["conflicts"]) == (17, 17, 0)

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {
                    "name": "weird",
                    "parameters": {"type": "dict", "properties": {"x": {"type": "quaternion"}}},
                }
            ]
        )
    )
    assert kag_main(["import", "tools", str(bad), "--graph", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert "tool 'weird' parameters.x: unknown type 'quaternion'" in err
