"""`train_model`: fit a classifier on iris, return its accuracy (what /train queues)."""

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from tasks import app


@app.task
def train_model():
    features, labels = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, random_state=0)
    model = LogisticRegression(max_iter=200).fit(x_train, y_train)
    return {"accuracy": float(model.score(x_test, y_test))}
