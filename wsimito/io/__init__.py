"""Reading and writing: annotations in one form (:mod:`.annotations`, with readers for
MIDOG JSON, SlideRunner SQLite, QuPath GeoJSON and CSV folders), QuPath GeoJSON
(:mod:`.geojson`), SlideRunner / MIDOG SQLite (:mod:`.sliderunner`), and atomic file
writing (:mod:`.atomic`) so that no half-written file is ever left behind."""
