#!/usr/bin/env python3
"""Build gslb/static/world.js, the dashboard's world map outline, from Natural Earth data.

Source: the npm package ``world-atlas`` (TopoJSON of Natural Earth's public-domain 1:110m
Admin 0 country boundaries; the package itself is ISC-licensed). Its ``countries-110m.json``
is decoded (TopoJSON arcs, delta-encoded and quantized), projected equirectangularly
(x = longitude + 180, y = LAT_TOP - latitude; Antarctica and the far south dropped to keep the
map compact), made continuous across the antimeridian (Russia, Fiji), rounded to 0.1 degree,
and written as one SVG path string per country, with the country's ISO 3166-1 alpha-2 code
(``iso``: what GeoIP databases and the traffic map name countries by), looked up by name in
Debian's iso-codes table (``/usr/share/iso-codes/json/iso_3166-1.json``, package ``iso-codes``)
plus :data:`NAME_TO_ISO` for Natural Earth's short names.

``build_world_map.py --add-iso OUT_JS`` adds the codes to an existing world.js (no npm needed).

Rerun (needs npm; nothing is installed into the tree, node_modules is never committed)::

    tmp=$(mktemp -d) && (cd "$tmp" && npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz)
    tools/build_world_map.py "$tmp/package/countries-110m.json" gslb/static/world.js
    rm -rf "$tmp"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":  # run under the project's venv (tools/_venv.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _venv
    _venv.use_project_venv(())

#: latitude at the top edge of the map and at the bottom edge (everything south is clipped)
LAT_TOP = 84.0
LAT_BOTTOM = -58.0
#: ISO 3166 numeric ids left out (010 = Antarctica)
SKIP_IDS = frozenset({"010"})


#: Natural Earth short names that iso-codes does not list (Kosovo: XK, as MaxMind uses; N. Cyprus
#: and Somaliland are drawn as parts of CY and SO)
NAME_TO_ISO = {
    "W. Sahara": "EH", "Dem. Rep. Congo": "CD", "Dominican Rep.": "DO", "Russia": "RU",
    "Falkland Is.": "FK", "Fr. S. Antarctic Lands": "TF", "Central African Rep.": "CF",
    "Eq. Guinea": "GQ", "Palestine": "PS", "Turkey": "TR", "Solomon Is.": "SB", "Brunei": "BN",
    "N. Cyprus": "CY", "Somaliland": "SO", "Bosnia and Herz.": "BA", "Macedonia": "MK",
    "Kosovo": "XK", "S. Sudan": "SS",
}
ISO_CODES = Path("/usr/share/iso-codes/json/iso_3166-1.json")


def iso_table(path: Path = ISO_CODES) -> dict[str, str]:
    """Lower-case country name (name, common name, official name) -> alpha-2 code."""
    table = {}
    for c in json.loads(path.read_text())["3166-1"]:
        for key in ("name", "common_name", "official_name"):
            if key in c:
                table[c[key].lower()] = c["alpha_2"]
    return table


def add_iso(countries: list[dict], table: dict[str, str]) -> list[str]:
    """Set ``iso`` on every country; returns the names without a code."""
    missing = []
    for c in countries:
        code = NAME_TO_ISO.get(c["name"]) or table.get(c["name"].lower())
        if code is None:
            missing.append(c["name"])
        else:
            c["iso"] = code
    return missing


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    """Every arc of the topology as absolute (lon, lat) points (undoing quantization)."""
    sx, sy = topology["transform"]["scale"]
    tx, ty = topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring_points(ring: list[int], arcs: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The points of one ring (a list of arc indexes; ~i means arc i reversed)."""
    points: list[tuple[float, float]] = []
    for index in ring:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        # consecutive arcs share their joining point
        points.extend(arc if not points else arc[1:])
    return points


def unwrap(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """A ring made continuous across the antimeridian (Russia, Fiji), plus its copy shifted by
    360 degrees when it sticks out of -180..180; the SVG view box clips both to the map."""
    out = [points[0]]
    for lon, lat in points[1:]:
        prev = out[-1][0]
        while lon - prev > 180:
            lon -= 360
        while lon - prev < -180:
            lon += 360
        out.append((lon, lat))
    lons = [lon for lon, _ in out]
    if min(lons) < -180:
        return [out, [(lon + 360, lat) for lon, lat in out]]
    if max(lons) > 180:
        return [out, [(lon - 360, lat) for lon, lat in out]]
    return [out]


def ring_path(points: list[tuple[float, float]]) -> str:
    """One ring as SVG path data in map coordinates, rounded, without repeated points."""
    out: list[str] = []
    last = None
    for lon, lat in points:
        x = round(lon + 180.0, 1)
        y = round(LAT_TOP - max(min(lat, LAT_TOP), LAT_BOTTOM), 1)
        if (x, y) == last:
            continue
        last = (x, y)
        out.append(f"{_num(x)} {_num(y)}")
    if len(out) < 3:
        return ""
    return "M" + "L".join(out) + "Z"


def _num(v: float) -> str:
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def build(topology: dict) -> dict:
    """The map data written to world.js: view box and one path per country."""
    arcs = decode_arcs(topology)
    countries = []
    for geometry in topology["objects"]["countries"]["geometries"]:
        if geometry.get("id") in SKIP_IDS:
            continue
        if geometry["type"] == "Polygon":
            polygons = [geometry["arcs"]]
        elif geometry["type"] == "MultiPolygon":
            polygons = geometry["arcs"]
        else:
            continue
        d = "".join(ring_path(points) for polygon in polygons for ring in polygon
                    for points in unwrap(ring_points(ring, arcs)))
        if d:
            countries.append({"name": geometry.get("properties", {}).get("name", ""), "d": d})
    return {
        "source": "Natural Earth 1:110m Admin 0 (public domain) via npm world-atlas 2.0.2 (ISC)",
        "projection": "equirectangular: x = lon + 180, y = %g - lat" % LAT_TOP,
        "latTop": LAT_TOP,
        "latBottom": LAT_BOTTOM,
        "width": 360,
        "height": LAT_TOP - LAT_BOTTOM,
        "countries": countries,
    }


def main(argv: list[str]) -> int:
    """``build_world_map.py COUNTRIES_110M_JSON OUT_JS`` or ``build_world_map.py --add-iso OUT_JS``."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "--add-iso":
        src = Path(argv[1]).read_text()
        data = json.loads(src[src.index("{"):src.rindex("}") + 1])
    else:
        data = build(json.loads(Path(argv[0]).read_text()))
    missing = add_iso(data["countries"], iso_table())
    if missing:
        print(f"no ISO code for: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = (
        "// Generated by tools/build_world_map.py from Natural Earth (public domain) via the npm\n"
        "// package world-atlas; do not edit by hand.\n"
        "window.GSLB_WORLD = " + json.dumps(data, separators=(",", ":")) + ";\n"
    )
    Path(argv[1]).write_text(text)
    print(f"{argv[1]}: {len(data['countries'])} countries, {len(text)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
