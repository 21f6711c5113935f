"""The Gradio app's logic, in small tested modules (``app.py`` only lays out and wires them).

- :mod:`measurements`: lesion area, diameter, perimeter, regions, asymmetry, border, flags
- :mod:`views`: screen-size overlay / mask / probability / uncertainty pictures
- :mod:`operating_points`: threshold presets and validation recall / precision
- :mod:`session`: one photo's result kept between events (re-threshold without the model)
- :mod:`batch`, :mod:`archive`: folders, file lists and safe ZIP reading
- :mod:`model_card`, :mod:`launch`: model card text; command line and server start
- :mod:`handlers`, :mod:`components`: Gradio event functions and component tweaks

Only :mod:`handlers`, :mod:`components` and :func:`launch.launch` import Gradio.
"""
