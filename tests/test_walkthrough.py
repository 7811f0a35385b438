"""NOTE FOR THE SESSION WRITING CHAPTER 04's WALK-THROUGH: another session overwrote this file
by mistake (its tests now live in tests/test_method_walkthrough.py). The tests you wrote here
for unichest_lib/book/walkthrough.py were lost: please write them again in this file."""
