"""A tripwire for Feast's own `feast apply` in this folder (never imported by the platform).

`feast apply` imports every .py file of the repo folder, collects the Feast objects defined at module level and
deletes every registered object it did not find. Our objects are built per model version by `lfm register` (they
are not module-level), so a plain `feast apply` here would tear down every version's views and services. Feast's
read-only commands (`feast -c feature_repo feature-views list`, `feast ui`, ...) do not import this file.
"""
raise SystemExit("feature_repo: definitions are applied by `lfm register` (driven by the model registry); "
                 "`feast apply` here would delete every registered model version's views. Use `lfm register`.")
