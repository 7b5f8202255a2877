"""Writers for results: QuPath GeoJSON (:mod:`.geojson`), SlideRunner / MIDOG SQLite
(:mod:`.sliderunner`), and atomic file writing (:mod:`.atomic`) so that no half-written
file is ever left behind."""
