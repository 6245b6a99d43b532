"""mnistlens explorer: pick a digit, see why the model labels it as it does.

    streamlit run apps/explore.py

This file only routes: one page per question, in `apps/views/` (not `pages/`: a
folder named `pages` beside the entry script switches Streamlit to its legacy
multipage mode until the entry script has run once, so a link to /inside opened on
a fresh server would run that page without the sidebar). Only the visible page
computes; every number and picture comes from a mnistlens function a notebook user
can call the same way.

The explorer's own modules sit beside this file (Streamlit puts apps/ on sys.path):
keys.py names everything a session keeps, catalog.py and session.py hold the data
and the models, sidebar.py the shared sidebar, url.py the link in the address bar,
cache.py (compare_cache.py for Compare models) and charts.py what the pages
compute and draw, defaults.py what each page shows first, warm.py computes that
when the server starts, runtime.py sets up the process.
"""

from __future__ import annotations

import streamlit as st

# isort: split
import runtime
import sidebar
import url

runtime.configure()
st.set_page_config(page_title="mnistlens", layout="wide")

# url path -> page; the first is the default, also at "/".
PAGES = {
    "explain": st.Page("views/explain.py", title="Explain a digit", default=True),
    "inside": st.Page("views/inside.py", title="Inside the network", url_path="inside"),
    "training": st.Page("views/training.py", title="Training examples", url_path="training"),
    "per-digit": st.Page("views/class_maps.py", title="Per-digit maps", url_path="per-digit"),
    "trust": st.Page("views/trust.py", title="Trust", url_path="trust"),
    "concepts": st.Page("views/concepts.py", title="Concepts", url_path="concepts"),
    "compare": st.Page("views/compare.py", title="Compare models", url_path="compare"),
    "yours": st.Page("views/your_model.py", title="Your model", url_path="yours"),
}
SECTIONS = {
    "This digit": ["explain", "inside", "training"],
    "This model": ["per-digit", "trust", "concepts"],
    "Models": ["compare", "yours"],
}

# While a run is in progress Streamlit dims the page's previous elements with an opacity
# transition, which a browser without a GPU paints frame by frame: 0.15 s of its CPU per
# second of run (benchmarks/README.md). Dimmed at once, the page says the same for less.
st.html("<style>[data-stale='true'] {transition: none !important}</style>")

page = st.navigation({title: [PAGES[p] for p in names] for title, names in SECTIONS.items()})
wanted = url.read_url()
if wanted in PAGES and PAGES[wanted] is not page:
    # ?page=inside opens that page, as the path /inside does (for links built by hand).
    st.switch_page(PAGES[wanted], query_params=url.view_params())
with runtime.serving():  # the warm-up waits while any session's run is in progress
    sidebar.draw()
    try:
        page.run()
    finally:
        url.write_url()
