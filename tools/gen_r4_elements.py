#!/usr/bin/env python3
"""Generate profiles/r4-elements.json from the official FHIR R4 (4.0.1) package.

Usage: python3 tools/gen_r4_elements.py /path/to/package [output.json]

Reads every core StructureDefinition (derivation "specialization", plus the
root types Resource and Element; constraint profiles and logical models are
ignored) and writes a compact table of every resource type, complex datatype,
primitive type and backbone element, listing only the elements *defined on*
each type (inherited elements are resolved through "base"). Stdlib only.
"""

import glob
import json
import os
import sys

REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
KIND_ORDER = {"primitive-type": 0, "complex-type": 1, "resource": 2}


def load_sds(pkg):
    sds = []
    for path in sorted(glob.glob(os.path.join(pkg, "StructureDefinition-*.json"))):
        with open(path, encoding="utf-8") as f:
            sd = json.load(f)
        if sd.get("resourceType") != "StructureDefinition":
            continue
        kind = sd.get("kind")
        if kind not in KIND_ORDER:
            continue  # logical models
        deriv = sd.get("derivation")
        if deriv == "constraint":
            continue
        if deriv is None and sd.get("baseDefinition"):
            continue
        sds.append(sd)
    return sds


def base_name(sd):
    bd = sd.get("baseDefinition")
    if not bd:
        return None
    return bd.rsplit("/", 1)[-1]


def element_entry(el, children_of):
    path = el["path"]
    name = path.rsplit(".", 1)[-1]
    codes = [t["code"] for t in el.get("type", [])]
    if "contentReference" in el:
        ref = el["contentReference"]
        if not ref.startswith("#"):
            raise SystemExit(f"unsupported contentReference {ref} at {path}")
        types = [ref[1:]]
    elif codes in (["BackboneElement"], ["Element"]) and children_of.get(path):
        types = [path]
    else:
        types = codes
    if not types:
        raise SystemExit(f"element without type: {path}")
    out = {"name": name, "types": types, "min": el.get("min", 0), "max": el.get("max", "*")}
    if el.get("isSummary"):
        out["summary"] = True
    if el.get("isModifier"):
        out["modifier"] = True
    b = el.get("binding")
    if b and b.get("strength") in ("required", "extensible") and b.get("valueSet"):
        out["binding"] = {"strength": b["strength"], "valueSet": b["valueSet"]}
    return out


def convert(sd, types):
    root = sd["type"]
    elements = sd["snapshot"]["element"]
    if not elements or elements[0]["path"] != root:
        raise SystemExit(f"unexpected snapshot root in {sd['id']}")
    children_of = {}
    for el in elements[1:]:
        parent = el["path"].rsplit(".", 1)[0]
        children_of.setdefault(parent, []).append(el)

    tdef = {"kind": sd["kind"], "base": base_name(sd)}
    if tdef["base"] is None:
        del tdef["base"]
    if sd["kind"] == "resource" or sd.get("abstract"):
        tdef["abstract"] = bool(sd.get("abstract"))
    tdef["elements"] = []
    if sd["kind"] == "primitive-type":
        for el in elements[1:]:
            # the primitive's value element (for derived primitives such as
            # `code` its path is still "code.value", inherited from string.value)
            if el["path"] == root + ".value":
                for t in el.get("type", []):
                    for ext in t.get("extension", []):
                        if ext.get("url") == REGEX_EXT:
                            tdef["regex"] = ext["valueString"]
    types[root] = tdef

    def fill(type_name, parent_path, tdef):
        backbones = []
        for el in children_of.get(parent_path, []):
            if el.get("base", {}).get("path") != el["path"]:
                continue  # inherited from the base type
            entry = element_entry(el, children_of)
            tdef["elements"].append(entry)
            if entry["types"] == [el["path"]]:
                code = el["type"][0]["code"]
                backbones.append((el["path"], code))
        for path, code in backbones:
            bdef = {"kind": "backbone", "base": code, "elements": []}
            types[path] = bdef
            fill(path, path, bdef)

    fill(root, root, tdef)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    pkg = sys.argv[1]
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "profiles", "r4-elements.json")
    sds = load_sds(pkg)
    sds.sort(key=lambda sd: (KIND_ORDER[sd["kind"]], sd["type"]))
    types = {}
    for sd in sds:
        if sd.get("fhirVersion", "4.0.1") != "4.0.1":
            raise SystemExit(f"unexpected fhirVersion in {sd['id']}")
        convert(sd, types)
    # sanity: every referenced type exists (system types excepted)
    for name, t in types.items():
        if "base" in t and t["base"] not in types:
            raise SystemExit(f"{name}: unknown base {t['base']}")
        for e in t["elements"]:
            for ty in e["types"]:
                if ty not in types and not ty.startswith("http://hl7.org/fhirpath/System."):
                    raise SystemExit(f"{name}.{e['name']}: unknown type {ty}")
    doc = {"fhirVersion": "4.0.1", "types": types}
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n")
    print(f"wrote {out_path}: {len(types)} types, {len(text)} bytes")


if __name__ == "__main__":
    main()
