"""New rows are encoded as training encoded its rows (FeatureEncoder.transform is the definition)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskloom.data.table import FeatureEncoder
from taskloom.serve.encoding import InputError, RowEncoder


@pytest.fixture
def fitted():
    train = pd.DataFrame({"size": [1.0, 2.0, 6.0, 3.0], "colour": ["red", "blue", None, " red "],
                          "grade": [1.0, 2.0, np.nan, 2.0]})
    return FeatureEncoder(["size"], ["colour", "grade"], impute="mean").fit(train)


def test_records_and_frames_encode_like_the_training_encoder(fitted):
    new = pd.DataFrame({"size": [4.0, np.nan, 0.5], "colour": ["blue", "green", None], "grade": [2.0, 1.0, np.nan]})
    expected = fitted.transform(new, str)
    encoder = RowEncoder(fitted)
    np.testing.assert_array_equal(encoder.encode_frame(new), expected)
    records = [{"size": 4.0, "colour": "blue", "grade": 2.0}, {"size": None, "colour": "green", "grade": 1.0},
               {"size": 0.5, "colour": None, "grade": None}]
    np.testing.assert_array_equal(encoder.encode_records(records), expected)
    assert expected[1, 0] == 0.0  # an empty size is the training mean, which standardizes to 0
    assert not expected[1, 1:4].any()  # green was never seen: all zeros


def test_whole_number_categories_match_in_either_spelling(fitted):
    encoder = RowEncoder(fitted)
    # training read grade as floats (it had an empty cell): categories '1.0', '2.0', '<missing>'
    assert fitted.categories["grade"] == ["1.0", "2.0", "<missing>"]
    np.testing.assert_array_equal(encoder.encode_records([{"size": 1, "colour": "red", "grade": 2}]),
                                  encoder.encode_records([{"size": 1, "colour": "red", "grade": 2.0}]))
    assert encoder.encode_records([{"size": 1, "colour": "red", "grade": "2"}])[0, -2] == 1.0


def test_unseen_categories_are_refused_when_asked(fitted):
    with pytest.raises(InputError, match=r"row 0, column 'colour': category 'green' was never seen") as error:
        RowEncoder(fitted, unknown="error").encode_records([{"size": 1, "colour": "green", "grade": 1}])
    assert (error.value.field, error.value.row) == ("colour", 0)
