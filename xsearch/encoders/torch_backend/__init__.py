"""The torch backend: open_clip models, on a GPU where there is one."""
