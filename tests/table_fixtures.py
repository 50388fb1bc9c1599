"""A census-like table (demographic attribute x income label) with numeric and categorical columns and gaps."""

import numpy as np
import pandas as pd


def census_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """``n`` rows: age, hours_per_week (numeric, some ages missing), workclass, education (text, some
    workclasses missing), sex and income (<=50K / >50K), where income leans on sex in the data."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["Female", "Male"], n, p=[0.35, 0.65])
    education = rng.choice(["HS-grad", "Bachelors", "Masters", "Some-college"], n)
    age = rng.integers(18, 80, n).astype(float)
    hours = rng.normal(40, 10, n).round(1)
    score = (0.04 * (age - 40) + 1.0 * (education == "Masters") + 1.2 * (sex == "Male")
             + 0.03 * (hours - 40) + rng.normal(0, 1, n))
    frame = pd.DataFrame({"age": age, "workclass": rng.choice(["Private", "Self-emp", "Gov"], n),
                          "education": education, "hours_per_week": hours, "sex": sex,
                          "income": np.where(score > 0.8, ">50K", "<=50K")})
    frame.loc[rng.choice(n, n // 30, replace=False), "age"] = np.nan
    frame.loc[rng.choice(n, n // 40, replace=False), "workclass"] = np.nan
    return frame
