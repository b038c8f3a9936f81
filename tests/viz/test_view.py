"""The base of the dashboards: a view's comms acknowledge their opening (see stemkit.viz.view.acknowledge_on_open)."""

from __future__ import annotations

from stemkit.viz.view import acknowledge_on_open


class FakeComm:
    """What acknowledge_on_open uses of a pyviz_comms client comm: its opening callback and send."""

    def __init__(self) -> None:
        self.opened = []
        self.sent = []
        self._on_open = self.opened.append

    def send(self, data=None, metadata=None, buffers=()) -> None:
        self.sent.append(metadata)


class FakeLayout:
    def __init__(self, *clients: FakeComm) -> None:
        self._comms = {f"ref{i}": (object(), client) for i, client in enumerate(clients)}


def test_opening_a_comm_runs_panels_callback_then_acknowledges_once():
    client = FakeComm()
    layout = FakeLayout(client)
    acknowledge_on_open(layout)
    acknowledge_on_open(layout)  # displayed again: not wrapped twice
    client._on_open({"content": {}})
    assert client.opened == [{"content": {}}]
    assert client.sent == [{"msg_type": "Ready", "content": ""}]


def test_a_layout_without_comms_is_left_alone():
    acknowledge_on_open(object())  # served or not yet displayed: nothing to do
