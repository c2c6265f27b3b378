"""Checks infra/terraform/*.tf against the Google provider's own schema, offline: `terraform validate` needs the
provider binary from the Terraform registry, which neither developers nor CI can reach, so a misspelt argument, a
missing required one or a block in the wrong place would otherwise first show up in a deploy.

    python -m infra.terraform_schema check [TF_DIR]        # one problem a line; exit 1 if any
    python -m infra.terraform_schema extract PACKAGE [-o DIR]

The schema comes from the prebuilt CDK bindings of the provider, whose jsii manifest carries every resource's and
data source's configuration (argument names, required or not, types, nested blocks). `extract` reduces it to
``infra/terraform/provider-schema/google-<provider version>.json.gz`` (only what the check needs), which is
committed: CI reads that file and never installs the package. The committed file was made with

    pip download --no-deps -d /tmp/g cdktn-provider-google==21.1.0    # bindings of hashicorp/google 8.7.0
    python -m infra.terraform_schema extract /tmp/g/cdktn_provider_google-21.1.0-py3-none-any.whl

`extract` also takes the npm tarball (@cdktn/provider-google: the .jsii.tgz inside the wheel is that tarball), an
unpacked package directory, or a bare .jsii / .jsii.gz. cdktf's older bindings (cdktf-cdktf-provider-google,
@cdktf/provider-google) come from the same generator and should reduce the same way, but were not tried. main.tf pins the provider to exactly the
schema's version (the check refuses any other pin): upgrade both together, extract first, then change the pin.

Covered: resource and data source types, argument and block names (also inside `dynamic` blocks), required
arguments and blocks, at most one of a single block, argument vs block, meta-arguments (count, for_each,
depends_on, provider, lifecycle and its contents, connection, provisioner), and the type of literal values. Not
covered: anything an expression computes (its value is unknown until plan), ConflictsWith/ExactlyOneOf rules and
allowed values, which the manifest does not encode, and the provider block itself.
"""

from __future__ import annotations

import argparse
import difflib
import gzip
import io
import json
import re
import sys
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

TF_DIR = Path(__file__).resolve().parent / "terraform"
SCHEMA_DIR = TF_DIR / "provider-schema"
PROVIDER = "google"  # the local name in required_providers and the prefix of every type it serves
HCL = hcl2.SerializationOptions(with_comments=False, explicit_blocks=True, strip_string_quotes=False)

Block = dict[str, Any]  # {"attributes": {name: {"required", "type"}}, "blocks": {name: Block + min/max_items}}


# --- extract: the jsii manifest -> the compact schema -------------------------------------------------------------


def _manifest_from_bytes(name: str, blob: bytes) -> dict[str, Any]:
    """The manifest inside whatever the package came as: a wheel (zip), a tarball (the npm package or the wheel's
    .jsii.tgz), a gzipped manifest, or the manifest itself."""
    if zipfile.is_zipfile(io.BytesIO(blob)):
        with zipfile.ZipFile(io.BytesIO(blob)) as wheel:
            inner = [n for n in wheel.namelist() if n.endswith((".jsii.tgz", "/.jsii", ".jsii.gz"))]
            if not inner:
                raise SystemExit(f"{name}: no jsii manifest inside")
            return _manifest_from_bytes(inner[0], wheel.read(inner[0]))
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
        if blob[257:262] != b"ustar":
            return _manifest_from_bytes(name, blob)
    if blob[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            jsii = [n for n in members if Path(n).name == ".jsii"]
            if not jsii:
                raise SystemExit(f"{name}: no .jsii inside")

            def read(member: str) -> bytes:
                extracted = tar.extractfile(members[member])
                assert extracted is not None
                return extracted.read()

            manifest = json.loads(read(jsii[0]))
            if manifest.get("schema") == "jsii/file-redirect":  # a compressed manifest beside a pointer to it
                target = str(Path(jsii[0]).parent / manifest["filename"]).removeprefix("./")
                return _manifest_from_bytes(target, read(target))
            return dict(manifest)
    manifest = json.loads(blob)
    if not isinstance(manifest, dict) or "types" not in manifest:
        raise SystemExit(f"{name}: not a jsii manifest")
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """The jsii manifest of a package given as a file (see `_manifest_from_bytes`) or an unpacked directory."""
    if path.is_dir():
        found = sorted(path.rglob(".jsii")) or sorted(path.rglob("*.jsii.tgz")) or sorted(path.rglob("*.whl"))
        if not found:
            raise SystemExit(f"{path}: no .jsii, .jsii.tgz or wheel below it")
        path = found[0]
        if path.name == ".jsii":
            manifest = json.loads(path.read_bytes())
            if manifest.get("schema") == "jsii/file-redirect":
                path = path.parent / manifest["filename"]
            else:
                return dict(manifest)
    return _manifest_from_bytes(path.name, path.read_bytes())


_TYPE_LINK = re.compile(r"/providers/([\w-]+/[\w-]+)/(\d[\w.+-]*)/docs/(resources|data-sources)/\w+ (\w+)\}")
_ANCHOR = re.compile(r"#(\w+) \w+#\1\}")  # "{@link https://.../docs/resources/x#field_name X#field_name}"


def _tf_name(prop: dict[str, Any]) -> str:
    """The Terraform name of a property: the anchor of its docs link, which the generator took from the provider's
    schema; re-deriving it from the camelCase name is wrong for a few (`buildAttribute` is `build`,
    `detectMd5Hash` is `detect_md5hash`), so that is only the fallback for the few without a link."""
    found = _ANCHOR.search(json.dumps(prop.get("docs", {})))
    if found:
        return found.group(1)
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", prop["name"]).lower()


def _iface(types: dict[str, Any], t: dict[str, Any]) -> str | None:
    fqn = t.get("fqn")
    return fqn if fqn in types and types[fqn]["kind"] == "interface" else None


def _block_of(types: dict[str, Any], t: dict[str, Any]) -> tuple[str, bool] | None:
    """(interface, repeatable) when a property is a nested block: the interface itself for a block of at most one,
    an array of it (in cdktf/cdktn also `IResolvable | Xxx[]`) for a repeatable block."""
    if fqn := _iface(types, t):
        return fqn, False
    for option in t.get("union", {}).get("types", [t]):
        collection = option.get("collection", {})
        if collection.get("kind") == "array" and (fqn := _iface(types, collection["elementtype"])):
            return fqn, True
    return None


def _value_type(t: dict[str, Any]) -> str:
    """Terraform's type syntax for a jsii type: string, number, bool, list(...), map(...), any."""
    if "primitive" in t:
        return {"string": "string", "number": "number", "boolean": "bool"}.get(t["primitive"], "any")
    if "union" in t:
        options = [o for o in t["union"]["types"] if not o.get("fqn", "").endswith(".IResolvable")]
        return _value_type(options[0]) if len(options) == 1 else "any"
    if "collection" in t:
        kind = "list" if t["collection"]["kind"] == "array" else "map"
        return f"{kind}({_value_type(t['collection']['elementtype'])})"
    return "any"


def _block(types: dict[str, Any], fqn: str, outer: frozenset[str] = frozenset()) -> Block:
    if fqn in outer:
        # A Terraform schema is a finite tree, but where a deep one repeats itself the generator reused the outer
        # block's interface for the inner one (cloud_security_compliance_cloud_control's oneof_value): a cycle, of
        # unknown real depth. Such a block's contents are not checked.
        return {"attributes": {}, "blocks": {}, "unchecked": True}
    attributes: dict[str, Any] = {}
    blocks: dict[str, Any] = {}
    for prop in types[fqn].get("properties", []):
        required = not prop.get("optional", False)
        nested = _block_of(types, prop["type"])
        if nested is None:
            attributes[_tf_name(prop)] = {"required": required, "type": _value_type(prop["type"])}
            continue
        block = _block(types, nested[0], outer | {fqn})
        block["min_items"] = 1 if required else 0
        if not nested[1]:
            block["max_items"] = 1
        blocks[_tf_name(prop)] = block
    return {"attributes": attributes, "blocks": blocks}


def reduce_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The compact schema: every resource and data source type of the provider, and where it came from."""
    types: dict[str, Any] = manifest["types"]
    out: dict[str, Any] = {"resources": {}, "data_sources": {}}
    providers: set[tuple[str, str]] = set()
    for cls in types.values():
        base = cls.get("base", "") if cls["kind"] == "class" else ""
        if not base.endswith((".TerraformResource", ".TerraformDataSource")):
            continue
        link = _TYPE_LINK.search(cls.get("docs", {}).get("summary", ""))
        if link is None:
            raise SystemExit(f"{cls['fqn']}: no registry link naming its Terraform type")
        source, version, kind, tf_type = link.groups()
        providers.add((source, version))
        config = next(p["type"]["fqn"] for p in cls["initializer"]["parameters"] if p["name"] == "config")
        out["resources" if kind == "resources" else "data_sources"][tf_type] = _block(types, config)
    if len(providers) != 1:
        raise SystemExit(f"expected the types of one provider version, found {sorted(providers)}")
    ((source, version),) = providers
    python = manifest.get("targets", {}).get("python", {}).get("distName")
    return {
        "provider": {"source": source, "version": version},
        "package": {"jsii": manifest["name"], "pypi": python, "version": manifest["version"]},
        **out,
    }


def write_schema(schema: dict[str, Any], out_dir: Path) -> Path:
    """Gzipped, keys sorted and no timestamp: the same package always gives the same bytes (a clean diff)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = schema["provider"]["source"].rsplit("/", 1)[-1]
    path = out_dir / f"{name}-{schema['provider']['version']}.json.gz"
    text = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
    return path


def extract(package: Path, out_dir: Path = SCHEMA_DIR) -> Path:
    """Reduce a provider package's jsii manifest to the committed compact schema; returns the file written."""
    return write_schema(reduce_manifest(read_manifest(package)), out_dir)


# --- check: the .tf files against the schema ----------------------------------------------------------------------


@dataclass(frozen=True)
class Schema:
    provider_version: str
    package: dict[str, Any]
    resources: dict[str, Block]
    data_sources: dict[str, Block]


def load_schema(path: Path | None = None) -> Schema:
    """The committed schema (there is one: the version main.tf pins), or the file given."""
    if path is None:
        found = sorted(SCHEMA_DIR.glob(f"{PROVIDER}-*.json.gz"))
        if len(found) != 1:
            raise SystemExit(f"{SCHEMA_DIR}: expected one {PROVIDER}-<version>.json.gz, found {len(found)}")
        path = found[0]
    raw = json.loads(gzip.decompress(path.read_bytes()))
    return Schema(raw["provider"]["version"], raw["package"], raw["resources"], raw["data_sources"])


# Meta-arguments Terraform itself gives every resource / data source: (arguments, blocks).
_RESOURCE_META = ({"count", "for_each", "depends_on", "provider"}, {"lifecycle", "connection", "provisioner"})
_DATA_META = ({"count", "for_each", "depends_on", "provider"}, {"lifecycle"})
_CONDITION: Block = {
    "attributes": {"condition": {"required": True, "type": "any"}, "error_message": {"required": True, "type": "any"}},
    "blocks": {},
}
_RESOURCE_LIFECYCLE: Block = {
    "attributes": {
        name: {"required": False, "type": "any"}
        for name in ("create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by")
    },
    "blocks": {"precondition": _CONDITION, "postcondition": _CONDITION},
}
_DATA_LIFECYCLE: Block = {"attributes": {}, "blocks": {"precondition": _CONDITION, "postcondition": _CONDITION}}
# Terraform's built-in resource (no provider): checked like a provider's.
_BUILTIN: dict[str, Block] = {
    "terraform_data": {
        "attributes": {n: {"required": False, "type": "any"} for n in ("input", "triggers_replace")},
        "blocks": {},
    }
}
_DYNAMIC_ARGS = {"for_each", "iterator", "labels"}
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _unquote(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label


def _is_block(value: Any) -> bool:
    """hcl2 (explicit_blocks) gives blocks as lists of bodies marked __is_block__, a labelled block (dynamic "x",
    provisioner "y") as {label: body}; an attribute's list of objects has no mark."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(item, dict)
            and (
                item.get("__is_block__") is True
                or (len(item) == 1 and isinstance(v := next(iter(item.values())), dict) and v.get("__is_block__"))
            )
            for item in value
        )
    )


def _labelled(value: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(_unquote(label), body) for item in value for label, body in item.items() if label != "__is_block__"]


def _suggest(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"the string {value}"


def _type_problem(value: Any, expected: str) -> str | None:
    """Why a literal value cannot be the expected type, with Terraform's conversions (a number or bool becomes a
    string, "5" a number, "true" a bool); None for expressions, whose value is only known at plan."""
    if value is None or expected == "any":
        return None
    template = False
    if isinstance(value, str):
        if not (len(value) >= 2 and value[0] == value[-1] == '"'):
            return None  # an expression: ${...}, or a bare reference inside a list
        text = value[1:-1]
        if text.startswith("${") and text.endswith("}") and text.count("${") == 1:
            return None  # "${x}" alone is x itself, of x's type
        # a heredoc or a template: a string, but which one is only known at plan
        template = text.startswith("<<") or "${" in text.replace("$${", "") or "%{" in text.replace("%%{", "")
    literal = "list" if isinstance(value, list) else "map" if isinstance(value, dict) else "primitive"
    kind, _, inner = expected.partition("(")
    if kind in ("list", "map"):
        if literal != kind:
            return f"expects a {expected}, not {'a string template' if template else _describe(value)}"
        elements = value if isinstance(value, list) else list(value.values())
        wrong = [v for v in elements if _type_problem(v, inner.removesuffix(")"))]
        return f"expects a {expected}, not one with {_describe(wrong[0])}" if wrong else None
    if literal != "primitive":
        return f"expects a {expected}, not {_describe(value)}"
    if template:
        return None
    if isinstance(value, str):
        text = value[1:-1]
        if expected == "number" and not _NUMBER.fullmatch(text):
            return f"expects a number, not {_describe(value)}"
        if expected == "bool" and text not in ("true", "false"):
            return f"expects a bool, not {_describe(value)}"
        return None
    if expected == "number" and isinstance(value, bool):
        return f"expects a number, not {_describe(value)}"
    if expected == "bool" and not isinstance(value, bool):
        return f"expects a bool, not {_describe(value)}"
    return None


def _check_body(
    body: dict[str, Any],
    schema: Block,
    path: list[str],
    report: list[str],
    meta: tuple[set[str], set[str], Block] | None = None,
) -> None:
    """Problems of one block body: `report` gets "<path>: <problem>" for each. `meta` is the meta-arguments, the
    meta-blocks and the lifecycle schema of a resource or data block's top level."""

    def say(problem: str) -> None:
        report.append(f"{'.'.join(path)}: {problem}" if path else problem)

    if schema.get("unchecked"):
        return  # a block the manifest cannot describe (see _block)

    attributes: dict[str, Any] = schema["attributes"]
    blocks: dict[str, Any] = schema["blocks"]
    given: set[str] = set()
    counts: Counter[str] = Counter()
    dynamic: set[str] = set()
    for key, value in body.items():
        if key == "__is_block__":
            continue
        if meta is not None and key in meta[0] and not _is_block(value):
            continue  # count, for_each, depends_on, provider: checked by the caller
        if meta is not None and key in meta[1] and _is_block(value):
            if key == "lifecycle":
                for item in value:
                    _check_body(item, meta[2], [*path, key], report)
            continue  # connection and provisioner: their contents depend on the connection type or provisioner
        if key == "dynamic" and _is_block(value):
            for name, dyn in _labelled(value):
                if name not in blocks:
                    if name in attributes:
                        say(f'dynamic "{name}": "{name}" is an argument, not a block: write {name} = ...')
                    else:
                        say(f'dynamic "{name}": unknown block "{name}"{_suggest(name, blocks)}')
                    continue
                dynamic.add(name)
                for arg in dyn:
                    if arg not in _DYNAMIC_ARGS | {"content", "__is_block__"}:
                        say(f'dynamic "{name}": unknown argument "{arg}"')
                if "for_each" not in dyn:
                    say(f'dynamic "{name}": missing required argument "for_each"')
                contents: list[Any] = dyn.get("content") or []
                if len(contents) != 1 or not _is_block(contents):
                    say(f'dynamic "{name}": needs exactly one content block')
                    continue
                _check_body(contents[0], blocks[name], [*path, name], report)
            continue
        if _is_block(value):
            if key in blocks:
                counts[key] += len(value)
                for item in value:
                    _check_body(item, blocks[key], [*path, key], report)
            elif key in attributes:
                given.add(key)
                say(f'"{key}" is an argument, not a block: write {key} = ...')
            else:
                say(f'unknown block "{key}"{_suggest(key, blocks)}')
            continue
        if key in attributes:
            if value is not None:
                given.add(key)
            problem = _type_problem(value, attributes[key]["type"])
            if problem:
                say(f'argument "{key}" {problem}')
        elif key in blocks:
            counts[key] += 1
            say(f'"{key}" is a block, not an argument: write {key} {{ ... }}')
        else:
            say(f'unknown argument "{key}"{_suggest(key, [*attributes, *blocks])}')
    for name, attribute in attributes.items():
        if attribute["required"] and name not in given:
            say(f'missing required argument "{name}"')
    for name, block in blocks.items():
        if name in dynamic:
            continue  # how many the dynamic block makes is only known at plan
        if counts[name] < block.get("min_items", 0):
            say(f'missing required block "{name}"')
        if "max_items" in block and counts[name] > block["max_items"]:
            say(f'at most {block["max_items"]} "{name}" block(s), found {counts[name]}')


def _provider_name(value: Any) -> str:
    """The provider's local name in `provider = google.alias` (hcl2 gives the reference as "${google.alias}")."""
    text = str(value).removeprefix("${").removesuffix("}")
    return text.split(".", 1)[0]


def _check_pin(parsed: dict[str, Any], file: str, version: str, report: list[str]) -> bool:
    """Problems of the provider pin, if this file has one; True when it does."""
    found = False
    for terraform in parsed.get("terraform", []):
        for required in terraform.get("required_providers", []):
            entry = required.get(PROVIDER)
            if entry is None:
                continue
            found = True
            pin = _unquote(str(entry.get("version", "")) if isinstance(entry, dict) else "")
            if pin.replace(" ", "").removeprefix("=") != version:
                what = f'version "{pin}" is not the schema\'s version' if pin else "no version"
                report.append(
                    f'{file}: required_providers.{PROVIDER}: {what}: pin "= {version}" (or extract the schema of '
                    "the version you want, see infra/terraform_schema.py)"
                )
    return found


def check(tf_dir: Path = TF_DIR, schema: Schema | None = None) -> list[str]:
    """Every problem of the .tf files in tf_dir against the provider schema, one readable line each:
    "<file>: <address>: [<block path>: ]<problem>"."""
    schema = schema or load_schema()
    report: list[str] = []
    pinned = False
    for path in sorted(tf_dir.glob("*.tf")):
        try:
            parsed = hcl2.loads(path.read_text(), serialization_options=HCL)
        except Exception as error:  # python-hcl2 raises lark's exceptions and its own
            report.append(f"{path.name}: does not parse: {error}")
            continue
        pinned = _check_pin(parsed, path.name, schema.provider_version, report) or pinned
        for kind in ("resource", "data"):
            for declared in parsed.get(kind, []):
                for quoted_type, named in declared.items():
                    for quoted_name, body in named.items():
                        _check_declaration(
                            kind, _unquote(quoted_type), _unquote(quoted_name), body, schema, f"{path.name}: ", report
                        )
    if not pinned:
        report.append(
            f'{tf_dir.name}: no required_providers.{PROVIDER} version: pin "= {schema.provider_version}", '
            "the version whose schema is checked"
        )
    return report


def _check_declaration(
    kind: str, tf_type: str, name: str, body: dict[str, Any], schema: Schema, prefix: str, report: list[str]
) -> None:
    address = f"{tf_type}.{name}" if kind == "resource" else f"data.{tf_type}.{name}"
    lines: list[str] = []
    known = schema.resources if kind == "resource" else schema.data_sources
    provider = _provider_name(body["provider"]) if "provider" in body else tf_type.split("_", 1)[0]
    block: Block | None = None
    if kind == "resource" and tf_type in _BUILTIN:
        block = _BUILTIN[tf_type]
    elif provider != PROVIDER:
        lines.append(f'no schema for provider "{provider}": only hashicorp/{PROVIDER} is checked')
    elif tf_type not in known:
        what = "resource type" if kind == "resource" else "data source type"
        lines.append(f'unknown {what} "{tf_type}"{_suggest(tf_type, known)}')
    else:
        block = known[tf_type]
    if "count" in body and "for_each" in body:
        lines.append('"count" and "for_each" cannot both be set')
    if block is not None:
        args, meta_blocks = _RESOURCE_META if kind == "resource" else _DATA_META
        lifecycle = _RESOURCE_LIFECYCLE if kind == "resource" else _DATA_LIFECYCLE
        _check_body(body, block, [], lines, (args, meta_blocks, lifecycle))
    report.extend(f"{prefix}{address}: {line}" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.terraform_schema", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_check = commands.add_parser("check", help="check the .tf files against the committed provider schema")
    run_check.add_argument("tf_dir", nargs="?", type=Path, default=TF_DIR)
    run_extract = commands.add_parser("extract", help="write the compact schema of a provider package")
    run_extract.add_argument("package", type=Path, help="wheel, npm tarball, .jsii.tgz, directory, .jsii(.gz)")
    run_extract.add_argument("-o", "--out-dir", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args(argv)
    if args.command == "extract":
        written = extract(args.package, args.out_dir)
        schema = load_schema(written)
        print(
            f"{written}: hashicorp/{PROVIDER} {schema.provider_version} from {schema.package['jsii']} "
            f"{schema.package['version']}: {len(schema.resources)} resources, {len(schema.data_sources)} data "
            f"sources, {written.stat().st_size} bytes"
        )
        return 0
    problems = check(args.tf_dir)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
