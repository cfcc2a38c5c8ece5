"""The built-in synthetic multi-view capture studio (subjects, motions, rig, renderer)."""
