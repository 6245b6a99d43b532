"""Every key the explorer keeps in `st.session_state`, in one place.

A session's state is these entries and nothing else: the widgets' values (Streamlit
keeps a widget's value under its key) and the few entries the explorer writes itself.
A module reads or writes an entry through these names, never a string of its own, so
what a session holds, and who sets it, can be read here.

Widgets get their starting values by putting them here before the widget is drawn
(from the URL, else a default), never through the widget's own default argument: the
one way Streamlit accepts a value from both places without a warning.

Keys that only name an element (tables, download and Load buttons) stay beside their
element: the explorer never reads them.
"""

from __future__ import annotations

# The shared view, drawn by sidebar.py, read by every page, kept in the URL (url.py).
MODEL = "model"  # the sidebar's model: a shipped file name or an upload's name
SOURCE = "source"  # one of SOURCES
INDEX = "index"  # the test image's index
CANVAS = "canvas"  # the drawing canvas
METHODS = "methods"  # the Explain page's methods (URL: methods)
COMPARE_MODELS = "compare_models"  # the Compare page's models (URL: models)

SOURCES = ("test image", "draw your own")
TEST_IMAGE, DRAWING = SOURCES

# Written by the explorer, never by a widget.
CHOICE = "_choice"  # this run's sidebar.Choice, which the pages read (`sidebar.current`)
URL_READ = "_url_read"  # the URL was read into the state (once, on the session's first run)
MODEL_COPIES = "_models"  # name -> this session's own copy of a shipped model (session.py)
UPLOADS = "uploads"  # name -> (model, meta) this session's user uploaded (session.py)
CF_FOR = "_cf_for"  # (model, digit) whose runner-up CF_TARGET was set to
COMPARE_CF_FOR = "_compare_cf_for"  # (models, test index) COMPARE_CF_TARGET was set for

# Explain page: its sidebar options.
TARGET = "target"
BASELINE = "baseline"
STEPS = "steps"
SHARED_SCALE = "shared"
CONTRAST = "contrast"
# Explain page: its counterfactual panel (explain_counterfactual.py).
CF_TARGET = "cf_target"  # the class to reach
CF_MODE = "cf_mode"  # one of mnistlens.counterfactual.MODES
CF_ON = "cf_on"  # search counterfactuals on the Explain page (off until asked)

# Inside the network.
LAYER = "layer"

# Per-digit maps.
CLASS_METHOD = "class_method"
CLASS_IMAGES = "class_n"

# Trust.
TRUST_METHODS = "trust_methods"
TRUST_IMAGES = "trust_n"

# Compare models (the models chosen: COMPARE_MODELS above).
COMPARE_A = "compare_a"
COMPARE_B = "compare_b"
COMPARE_IMAGE = "compare_image"
COMPARE_TRANSFORM = "compare_transform"  # the stress examples' transform
COMPARE_SEVERITY = "compare_severity"  # and its severity
COMPARE_CF_TARGET = "compare_cf_target"  # the class every model's counterfactual reaches

# Concepts.
CONCEPTS = "concepts"  # the built-in concepts tested
CONCEPT_LAYERS = "concept_layers"
CONCEPT_FAST = "concept_fast"  # mean-difference CAVs instead of a linear SVM's
CONCEPT_PICTURES = "concept_pictures"  # pictures of a concept of your own (uploads)
CONCEPT_NAME = "concept_name"  # its name
CONCEPT_CANVAS = "concept_canvas"  # its canvas, as "concept_canvas_N": N drawings added
CONCEPT_DRAWINGS = "_concept_drawings"  # its drawings added so far: (1, 28, 28) images

# Your model.
YOURS_KIND = "yours_kind"
YOURS_FILE = "yours_file"
YOURS_ARCH = "yours_arch"
YOURS_KWARGS = "yours_kwargs"
YOURS_INPUT = "yours_input"
YOURS_LOADED = "yours_loaded"  # the upload the page describes (set by its Load button)
YOURS_ERROR = "yours_error"  # why the last Load failed, shown once
