"""Model-based test of delivery: random sends, disconnects, reconnects and an edge restart.

Hypothesis drives a state machine against a cluster of its own. Each device
acts as a well-behaved client: it appends pushes that continue its timeline,
calls ``sync`` from its last seq when it sees a gap or logs in, and keeps
what it has across reconnects. At the end every device syncs once more and
must hold exactly its user's stored messages, in seq order, none twice.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from prim import devcluster
from prim.client import TenantClient, UserConnection

from helpers import unique, ws_url

pytestmark = pytest.mark.integration

USERS = ["a", "b", "c"]
PLATFORMS = ["web", "android"]


@pytest.fixture(scope="module")
def model_cluster(tmp_path_factory):
    """A cluster of its own, because the test restarts an edge node."""
    logs = tmp_path_factory.mktemp("model-logs")
    suite = devcluster.Cluster(admin_token=secrets.token_urlsafe(16), log_dir=logs)
    with suite.running():
        yield suite


class Device:
    """One client app of a user: its stored messages survive its connections."""

    def __init__(self, user_id: str, platform: str, token: str):
        self.user_id = user_id
        self.platform = platform
        self.token = token
        self.conn: UserConnection | None = None
        self.edge = 0
        self.messages: list[dict] = []  # this device's copy of the timeline, by seq
        self.pushed: list[str] = []  # msgIds pushed to the current connection

    @property
    def last_seq(self) -> int:
        return self.messages[-1]["seq"] if self.messages else 0

    def add(self, message: dict) -> bool:
        """Append a message that continues the timeline; return False on a gap."""
        seq = message["seq"]
        if seq <= self.last_seq:
            assert self.messages[seq - 1]["msgId"] == message["msgId"], (self.user_id, seq)
            return True
        if seq != self.last_seq + 1:
            return False
        self.messages.append(message)
        return True

    async def sync(self) -> None:
        while True:
            page = await self.conn.sync(self.last_seq, limit=500)
            for message in page["messages"]:
                assert self.add(message), f"sync of {self.user_id} skipped a seq"
            if not page["hasMore"]:
                return

    async def read_pushes(self) -> None:
        """Take every push that has arrived; sync on a gap, as a client should."""
        if self.conn is None:
            return
        gap = False
        while not self.conn.pushes.empty():
            push = self.conn.pushes.get_nowait()
            if push["cmd"] != "msg":
                continue
            message = push["response"]["data"]
            assert message["msgId"] not in self.pushed, f"{message['msgId']} pushed twice"
            self.pushed.append(message["msgId"])
            gap = gap or not self.add(message)
        if gap and self.conn.close_code is None:
            await self.sync()


class DeliveryModel(RuleBasedStateMachine):
    cluster: devcluster.Cluster  # set by the test before running

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = secrets.token_hex(3)
        self.timelines: dict[str, list[str]] = {user: [] for user in USERS}
        self.restarted = False
        self.tenant, self.devices = self.run(self.setup())

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    def uid(self, user: str) -> str:
        return f"{self.prefix}-{user}"

    async def setup(self):
        account = unique("model")
        password = "pw-" + secrets.token_hex(8)
        base = f"http://127.0.0.1:{self.cluster.edge_http_ports[0]}"
        async with TenantClient(base, admin_token=self.cluster.admin_token) as operator:
            await operator.create_sys_client(account, password)
        tenant = TenantClient(base, account, password)
        devices = {}
        for user in USERS:
            for platform in PLATFORMS:
                token = (await tenant.get_token(self.uid(user), platform))["token"]
                devices[user, platform] = Device(self.uid(user), platform, token)
        return tenant, devices

    async def refresh(self) -> None:
        """Notice closed connections and read pushes of the open ones."""
        for device in self.devices.values():
            if device.conn is not None and device.conn.close_code is not None:
                await device.conn.close()
                device.conn = None
            await device.read_pushes()

    # Rules

    @rule(user=st.sampled_from(USERS), platform=st.sampled_from(PLATFORMS), edge=st.integers(0, 1))
    def connect(self, user, platform, edge):
        device = self.devices[user, platform]
        if device.conn is not None:
            return

        async def go():
            device.conn = await UserConnection.connect(ws_url(self.cluster, edge), device.token)
            device.edge = edge
            device.pushed = []
            await device.sync()

        self.run(go())

    @rule(user=st.sampled_from(USERS), platform=st.sampled_from(PLATFORMS))
    def disconnect(self, user, platform):
        device = self.devices[user, platform]
        if device.conn is None:
            return

        async def go():
            await device.read_pushes()
            await device.conn.close()
            device.conn = None

        self.run(go())

    @rule(sender=st.sampled_from(USERS), to=st.sampled_from(USERS), count=st.integers(1, 4))
    def send(self, sender, to, count):
        online = [d for (u, _), d in self.devices.items() if u == sender and d.conn is not None]

        async def go():
            await self.refresh()
            for n in range(count):
                text = f"{sender}->{to} {len(self.timelines[sender])}.{n}"
                if online:
                    device = online[0]
                    reply = await device.conn.send(self.uid(to), text)
                    # The sending connection gets the reply, never a push.
                    if not device.add({**reply, "message": text}):
                        await device.sync()
                else:
                    reply = await self.tenant.send_msg(self.uid(sender), text, to=self.uid(to))
                self.timelines[sender].append(reply["msgId"])
                if to != sender:
                    self.timelines[to].append(reply["msgId"])
            await asyncio.sleep(0.05)
            await self.refresh()

        self.run(go())

    @precondition(lambda self: not self.restarted)
    @rule()
    def restart_edge2(self):
        self.restarted = True
        self.cluster.processes["edge2"].stop()
        self.cluster.start_edge(1)

        async def go():
            for device in self.devices.values():
                if device.conn is not None and device.edge == 1:
                    # Drained: a reconnect push, then close code 1012.
                    assert await device.conn.wait_closed(10) == 1012
            await self.refresh()

        self.run(go())

    def teardown(self):
        async def check():
            await self.refresh()
            for device in self.devices.values():
                if device.conn is None:
                    device.conn = await UserConnection.connect(
                        ws_url(self.cluster, 0), device.token
                    )
                    device.pushed = []
                await device.sync()
                await asyncio.sleep(0)
                await device.read_pushes()
            for (user, _), device in self.devices.items():
                assert [m["msgId"] for m in device.messages] == self.timelines[user], device.user_id
                assert [m["seq"] for m in device.messages] == list(
                    range(1, len(device.messages) + 1)
                )
            for device in self.devices.values():
                await device.conn.close()
            await self.tenant.close()

        try:
            self.run(check())
        finally:
            self.loop.close()


def test_devices_converge_to_stored_timelines(model_cluster):
    DeliveryModel.cluster = model_cluster
    run_state_machine_as_test(
        DeliveryModel,
        settings=settings(
            max_examples=8,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
