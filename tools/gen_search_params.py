#!/usr/bin/env python3
"""Generate profiles/r4-search-parameters.json from the official FHIR R4 (4.0.1) package.

Usage: python3 tools/gen_search_params.py /path/to/package [output.json]

For every concrete resource type, lists the core SearchParameters that apply to
it with the part of the FHIRPath expression that concerns that type (R4 shares
one SearchParameter between many types and joins their expressions with `|`),
plus the parameters common to all resources and the patient compartment.
Stdlib only; the output is embedded in the server binary.

A token parameter (or composite component) whose every expression part is a
plain path to a `code` element with a required binding to a ValueSet drawn from
exactly one CodeSystem gets `codeSystem`: that system is implicit in the code
(`Patient.gender` -> http://hl7.org/fhir/administrative-gender), so it is
indexed with the code and `system|code` and `|code` search behave as for a
Coding (HAPI does the same).
"""

import glob
import json
import os
import re
import sys


def split_top(expr, sep="|"):
    """Split on `sep` outside parentheses and quotes."""
    parts, depth, cur, quote = [], 0, [], None
    for ch in expr:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if cur:
        parts.append("".join(cur).strip())
    return [p for p in parts if p]


def head_type(part):
    m = re.match(r"^\(*\s*([A-Za-z]+)\b", part)
    return m.group(1) if m else None


class CodeSystems:
    """Element path -> the one CodeSystem of its required binding (code elements only)."""

    def __init__(self, pkg):
        self.elements = {}
        for path in glob.glob(os.path.join(pkg, "StructureDefinition-*.json")):
            sd = json.load(open(path, encoding="utf-8"))
            if sd.get("derivation") != "specialization":
                continue
            for e in sd.get("snapshot", {}).get("element", []):
                self.elements.setdefault(e["path"], e)
        self.valuesets = {}
        for path in glob.glob(os.path.join(pkg, "ValueSet-*.json")):
            vs = json.load(open(path, encoding="utf-8"))
            self.valuesets.setdefault(vs.get("url"), vs)

    def element(self, path):
        """The definition at a dotted path, following datatypes and contentReference."""
        steps = path.split(".")
        cur, i = steps[0], 1
        while i < len(steps):
            e = self.elements.get(cur + "." + steps[i])
            if e is None:
                return None
            i += 1
            if i == len(steps):
                return e
            if e.get("contentReference"):
                cur = e["contentReference"].lstrip("#")
                continue
            types = [t["code"] for t in e.get("type", [])]
            if types in (["BackboneElement"], ["Element"]):
                cur = e["path"]
            elif len(types) == 1:
                cur = types[0]
            else:
                return None
        return None

    def of_valueset(self, url):
        vs = self.valuesets.get(url.split("|")[0])
        if not vs:
            return None
        compose = vs.get("compose", {})
        inc = compose.get("include", [])
        if len(inc) != 1 or compose.get("exclude"):
            return None
        if inc[0].get("valueSet") or not inc[0].get("system"):
            return None
        return inc[0]["system"]

    def of_path(self, path):
        if not re.fullmatch(r"[A-Za-z]+(\.[A-Za-z]+)+", path):
            return None
        e = self.element(path)
        if e is None or [t["code"] for t in e.get("type", [])] != ["code"]:
            return None
        b = e.get("binding") or {}
        if b.get("strength") != "required" or not b.get("valueSet"):
            return None
        return self.of_valueset(b["valueSet"])

    def of_expression(self, expr):
        """The system when every `|` part of `expr` has the same one, else None."""
        systems = {self.of_path(p) for p in split_top(expr)}
        return systems.pop() if len(systems) == 1 else None


def describe(sp, ty):
    desc = sp.get("description", "")
    for line in desc.splitlines():
        m = re.match(r"^\s*\*\s*\[([A-Za-z]+)\]\([^)]*\):\s*(.*)$", line)
        if m and m.group(1) == ty:
            return m.group(2).strip()
    first = desc.strip().splitlines()[0] if desc.strip() else ""
    if first.startswith("Multiple Resources"):
        return ""
    return first.strip()


def main():
    pkg = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "profiles", "r4-search-parameters.json")
    types = []
    for path in sorted(glob.glob(os.path.join(pkg, "StructureDefinition-*.json"))):
        sd = json.load(open(path, encoding="utf-8"))
        if (sd.get("kind") == "resource" and not sd.get("abstract")
                and sd.get("derivation") == "specialization"):
            types.append(sd["type"])
    types = sorted(set(types))
    tset = set(types)
    code_systems = CodeSystems(pkg)

    common, params = [], {t: [] for t in types}
    for path in sorted(glob.glob(os.path.join(pkg, "SearchParameter-*.json"))):
        sp = json.load(open(path, encoding="utf-8"))
        if sp.get("resourceType") != "SearchParameter":
            continue
        code, kind, expr = sp["code"], sp["type"], sp.get("expression")
        if not expr or kind == "special":
            continue
        base = sp.get("base", [])
        entry = {
            "code": code,
            "type": kind,
            "url": sp["url"],
        }
        if sp.get("target"):
            entry["targets"] = sorted(sp["target"])
        if sp.get("component"):
            entry["components"] = [
                {"definition": c["definition"], "expression": c["expression"]}
                for c in sp["component"]
            ]
        if base in (["Resource"], ["DomainResource"]):
            e = dict(entry)
            e["expression"] = expr
            e["description"] = describe(sp, base[0])
            common.append(e)
            continue
        parts = split_top(expr)
        for ty in base:
            if ty not in tset:
                continue
            mine = [p for p in parts if head_type(p) == ty]
            if not mine:
                continue
            e = dict(entry)
            e["expression"] = " | ".join(mine)
            if kind == "token":
                system = code_systems.of_expression(e["expression"])
                if system:
                    e["codeSystem"] = system
            if kind == "composite" and len(mine) == 1:
                comps = []
                for c in entry["components"]:
                    c = dict(c)
                    system = code_systems.of_path(mine[0] + "." + c["expression"])
                    if system:
                        c["codeSystem"] = system
                    comps.append(c)
                e["components"] = comps
            e["description"] = describe(sp, ty)
            params[ty].append(e)
    for ty in params:
        params[ty].sort(key=lambda e: e["code"])
    seen, dedup = set(), []
    for e in sorted(common, key=lambda e: (e["code"], e["url"])):
        if e["code"] not in seen:
            seen.add(e["code"])
            dedup.append(e)
    common = dedup

    comp = json.load(open(os.path.join(pkg, "CompartmentDefinition-patient.json"), encoding="utf-8"))
    patient_compartment = {}
    for r in comp.get("resource", []):
        if r.get("param"):
            patient_compartment[r["code"]] = r["param"]

    doc = {
        "fhirVersion": "4.0.1",
        "source": "hl7.fhir.r4.examples 4.0.1 (SearchParameter-*.json, CompartmentDefinition-patient.json;"
                  " codeSystem from StructureDefinition-*.json required bindings and ValueSet-*.json)",
        "resourceTypes": types,
        "common": common,
        "params": params,
        "patientCompartment": patient_compartment,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=0, sort_keys=False, ensure_ascii=False)
        f.write("\n")
    n = sum(len(v) for v in params.values())
    print(f"{len(types)} resource types, {n} type parameters, {len(common)} common -> {out}")


if __name__ == "__main__":
    main()
