"""``fourreal view``: a viser server that shows a 4D scene in the browser (docs/viewing.md).

Not a registered plugin kind (no kind of :mod:`fourreal_core.interfaces` fits a viewer):
the CLI imports it by name, and the core never does. Needs the ``view`` extra
(``pip install -e .[view]``: viser).
"""
