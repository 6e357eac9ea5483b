"""--schema: check each record against a JSON Schema (draft 2020-12 unless it names another).

jsonschema is the judge: it implements 2020-12 and gives the failing path and message. At about
11k records/s on a 10-field schema it is too slow to be the only check, so a schema whose
keywords mean the same in draft 7 and 2020-12 (the everyday ones: type, properties, required,
enum, pattern, items as one schema, $ref into $defs, ...) is also compiled with fastjsonschema
(draft 7, ~30x faster), which clears valid records; any record it rejects is judged again by
jsonschema, whose verdict stands. A schema with 2020-12-only keywords (prefixItems,
unevaluatedProperties, dependentRequired, $dynamicRef, a $ref beside other keywords, ...) is
checked by jsonschema alone. benchmarks/io has the figures.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from llmtools.errors import UsageError, require

# Keywords fastjsonschema's draft 7 and jsonschema's 2020-12 read alike (formats are not
# asserted by either: 2020-12 makes `format` an annotation, and fastjsonschema is told so).
_SAME_IN_BOTH = frozenset({
    "$schema", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    "type", "enum", "const", "format",
    "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern",
    "items", "maxItems", "minItems", "uniqueItems", "contains",
    "maxProperties", "minProperties", "required", "properties", "patternProperties", "additionalProperties",
    "propertyNames",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
    "$ref", "$defs", "definitions",
})
_ONE = ("items", "contains", "additionalProperties", "propertyNames", "not", "if", "then", "else")
_MANY = ("allOf", "anyOf", "oneOf")
_MAP = ("properties", "patternProperties", "$defs", "definitions")


def _fast_ok(node: Any, root: bool = True) -> bool:
    """True when every keyword in the schema `node` means the same to both libraries."""
    if isinstance(node, bool):
        return True
    if not isinstance(node, dict) or not set(node) <= _SAME_IN_BOTH:
        return False
    if "$ref" in node:
        ref = node["$ref"]
        # draft 7 ignores a $ref's siblings, 2020-12 applies them; only local refs are resolved alike
        if len(node) > 1 + ("$defs" in node) + ("definitions" in node) + ("$comment" in node) or not (
                isinstance(ref, str) and ref.startswith("#")):
            return False
    if "$schema" in node and not root:
        return False
    if "items" in node and not isinstance(node["items"], (dict, bool)):
        return False  # an array of schemas is draft 7's tuple form, prefixItems in 2020-12
    for key in _ONE:
        if key in node and isinstance(node[key], (dict, bool)) and not _fast_ok(node[key], False):
            return False
    for key in _MANY:
        if key in node and not all(_fast_ok(sub, False) for sub in node[key]):
            return False
    for key in _MAP:
        if key in node and not all(_fast_ok(sub, False) for sub in node[key].values()):
            return False
    return True


class SchemaCheck:
    """`check(record)` -> None, or (path, message) of the failure jsonschema ranks first; `path`
    is dotted like --field (`meta.lang`, `tags.2`; "" for the record itself)."""

    def __init__(self, schema: Any, source: str = "schema"):
        jsonschema = require("jsonschema", purpose="--schema")
        from jsonschema.validators import validator_for

        self._args = (schema, source)
        cls = validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise UsageError(f"--schema {source}: not a valid JSON Schema{f' (at {where})' if where else ''}: "
                             f"{_short(exc.message)}") from None
        self.validator = cls(schema)
        self.best_match = jsonschema.exceptions.best_match
        self.engine = "jsonschema"
        self._fast: Callable[[Any], Any] | None = None
        if cls is jsonschema.Draft202012Validator and _fast_ok(schema):
            self._fast = _compile_fast(schema)
            if self._fast is not None:
                self.engine = "fastjsonschema+jsonschema"
        self._is_valid = self.validator.is_valid

    def __reduce__(self) -> tuple[Any, tuple[Any, str]]:
        # Sent to Spark executors as the schema itself: the compiled validators do not pickle.
        return SchemaCheck, self._args

    def __call__(self, record: Any) -> tuple[str, str] | None:
        fast = self._fast
        if fast is not None:
            try:
                fast(record)
                return None
            except Exception:  # a rejection (or anything odd): jsonschema decides
                pass
        elif self._is_valid(record):
            return None
        error = self.best_match(self.validator.iter_errors(record))
        if error is None:
            return None
        return ".".join(str(p) for p in error.absolute_path), _short(error.message)


def _compile_fast(schema: dict) -> Callable[[Any], Any] | None:
    try:
        import fastjsonschema
    except ImportError:
        return None
    draft7 = {**schema, "$schema": "http://json-schema.org/draft-07/schema#"}
    try:
        return fastjsonschema.compile(draft7, use_formats=False, use_default=False, detailed_exceptions=False)
    except Exception:  # anything it cannot compile is left to jsonschema
        return None


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def load(path: str) -> SchemaCheck:
    """The check for the schema in `path` (JSON, or YAML for .yaml/.yml); a missing, unreadable
    or invalid schema is a usage error (exit 2)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"--schema {path}: {exc.strerror or exc}") from None
    try:
        if os.path.splitext(path)[1].lower() in (".yaml", ".yml"):
            import yaml

            schema = yaml.safe_load(text)
        else:
            schema = json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise UsageError(f"--schema {path}: not valid JSON: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        raise UsageError(f"--schema {path}: not valid YAML: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise UsageError(f"--schema {path}: a schema is an object (or true/false), not {type(schema).__name__}")
    return SchemaCheck(schema, source=path)
