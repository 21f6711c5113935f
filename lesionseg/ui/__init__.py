"""The Gradio app's page logic, in small tested modules (``app.py`` only lays out and wires them).

The segmentation, measurements, operating points and input handling are the library's
(:mod:`lesionseg.inference`, :mod:`lesionseg.measurements`, :mod:`lesionseg.operating_points`,
:mod:`lesionseg.data`); these modules shape them for the page:

- :mod:`session`: one photo's prediction kept between events (re-threshold without the model)
- :mod:`views`: screen-size overlay / mask / probability / uncertainty pictures
- :mod:`formatting`: the measurements table
- :mod:`batch`: the Batch tab on the library's batch engine: gallery, table, results ZIP
- :mod:`card`, :mod:`launch`: the model card tab's text; command line and server start
- :mod:`editing`: correcting an outline (refiner clicks, brush / eraser dabs, undo, save)
- :mod:`handlers`, :mod:`edit_handlers`, :mod:`components`: Gradio event functions and component tweaks

Only :mod:`handlers`, :mod:`edit_handlers`, :mod:`components` and :func:`launch.launch` import Gradio.
"""
