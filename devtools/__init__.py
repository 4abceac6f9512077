"""Development tools that never ship: the simulator, the local cloud, the emulator launcher, the demo,
the offline evaluation CLI and the bundle builder.

``shared/`` is what the functions deploy; nothing in it imports this package (tests/test_packaging.py
checks that a built bundle cannot import ``devtools``).
"""
