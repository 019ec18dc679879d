"""Kong's entities as declarations: one schema per entity (fastgw/config/schema.py's engine) and
the build that makes its model object (fastgw/config/model.py).

One module per entity, or per family (upstreams with their targets); the loader
(fastgw/config/loader.py) reads the document with them and links what names what.
"""
