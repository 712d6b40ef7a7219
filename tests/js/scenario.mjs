// Runs the OFFICIAL Impulse Realtime client (@impulselab/realtime) through JSON scenarios, for
// tests/test_official_client.py. Read one JSON object on stdin:
//
//   {"serviceUrl": BASE, "healthUrl": URL, "secret": S, "timeoutMs": 30000, "waitMs": 5000,
//    "scenarios": {"name": [step, ...], ...}}
//
// and print one JSON object on stdout:
//
//   {"timedOut": false,
//    "scenarios": {"name": {"steps": [...], "received": {...}, "stopped": null, "released": true}}}
//
// Scenarios run one after the other, each with its own clients, closed at its end; `released`
// says whether /health then counted no more connections than when the scenario began. Steps
// (`do`, and an optional `label` echoed in the result):
//   subscribe      {client, as, channel, token?, topic?}  createRealtimeClient(...).subscribe;
//                  the handler's events are collected in received[as]
//   opened         wait until every EventSource opened (or failed: the step fails)
//   await          {counts: {as: n}}  wait until received[as] holds n events
//   push           {channel, payload?, audience?, token?}  createServerClient(...).push; a `token`
//                  key (null for none) replaces the secret; records the rejection message if any
//   pushMany       {events, token?}  createServerClient(...).pushMany
//   post           {body | raw, token?}  a raw fetch POST (the server client hides the answer)
//   unsubscribe    {as, frees?}  calls the function subscribe returned
//   unsubscribeAll / unsubscribeChannel  {client, channel, frees?}
//   unsubscribeAllChannels / close      {client, frees?}
//                  with `frees`, polls /health until `connections` fell by that much
//   eventSources   records what each EventSource did: opens, errors, readyState
// A failed `opened` or `await` stops its scenario (the rest would only wait again). The whole
// run has its own deadline, so it never hangs whatever the server does.
import { EventSource } from 'eventsource';
import { createRealtimeClient, createServerClient } from '@impulselab/realtime';

// The npm package `eventsource` as the global EventSource, as the official client expects.
// The subclass only watches (the client keeps its EventSources to itself); it changes nothing.
const eventSources = [];
class ObservedEventSource extends EventSource {
  constructor(url, init) {
    super(url, init);
    const record = { url: String(url), opens: 0, errors: 0, source: this };
    eventSources.push(record);
    this.addEventListener('open', () => { record.opens += 1; });
    this.addEventListener('error', () => { record.errors += 1; });
  }
}
globalThis.EventSource = ObservedEventSource;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, waitMs) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
}

function describeEventSources() {
  return eventSources.map(({ url, opens, errors, source }) => ({
    url, opens, errors, readyState: source.readyState,
  }));
}

async function runScenario(config, steps, state) {
  const { serviceUrl, healthUrl, secret } = config;
  const waitMs = config.waitMs ?? 5000;
  const clients = new Map();
  const unsubscribers = new Map();
  const { steps: results, received } = state;
  const firstEventSource = eventSources.length;

  const client = (name) => {
    if (!clients.has(name)) clients.set(name, createRealtimeClient({ serviceUrl }));
    return clients.get(name);
  };
  const serverClient = (step) =>
    createServerClient({ serviceUrl, token: 'token' in step ? step.token ?? undefined : secret });
  const connections = async () => (await (await fetch(healthUrl)).json()).connections;
  const startConnections = await connections();

  async function freeing(step, action) {
    const before = step.frees ? await connections() : null;
    const started = Date.now();
    action();
    if (!step.frees) return {};
    let after = before;
    const freed = await until(async () => (after = await connections()) <= before - step.frees, waitMs);
    return { before, after, freed, freedMs: Date.now() - started };
  }

  const actions = {
    async subscribe(step) {
      received[step.as] = [];
      const options = {};
      if (step.token !== undefined) options.token = step.token;
      if (step.topic !== undefined) options.topic = step.topic;
      const unsubscribe = client(step.client ?? 'default').subscribe(
        step.channel, (event) => received[step.as].push(event), options);
      unsubscribers.set(step.as, unsubscribe);
      return {};
    },
    async opened() {
      const mine = () => eventSources.slice(firstEventSource);
      const settled = await until(() => mine().every(({ opens, source }) => opens > 0 || source.readyState === 2), waitMs);
      const failed = mine().filter(({ opens }) => opens === 0).map(({ url }) => url);
      return { ok: settled && failed.length === 0, failed };
    },
    async await(step) {
      const done = await until(
        () => Object.entries(step.counts).every(([as, n]) => received[as].length >= n), waitMs);
      const counts = Object.fromEntries(Object.keys(step.counts).map((as) => [as, received[as].length]));
      return { ok: done, counts };
    },
    async push(step) {
      try {
        await serverClient(step).push(step.channel, step.payload, step.audience);
        return { rejected: null };
      } catch (error) {
        return { rejected: error.message };
      }
    },
    async pushMany(step) {
      try {
        await serverClient(step).pushMany(step.events);
        return { rejected: null };
      } catch (error) {
        return { rejected: error.message };
      }
    },
    async post(step) {
      const token = 'token' in step ? step.token : secret;
      const response = await fetch(serviceUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: 'raw' in step ? step.raw : JSON.stringify(step.body),
      });
      const text = await response.text();
      let body;
      try { body = JSON.parse(text); } catch { body = { notJson: text }; }
      return { status: response.status, body };
    },
    async unsubscribe(step) {
      return freeing(step, () => unsubscribers.get(step.as)());
    },
    async unsubscribeAll(step) {
      return freeing(step, () => client(step.client).unsubscribeAll(step.channel));
    },
    async unsubscribeChannel(step) {
      return freeing(step, () => client(step.client).unsubscribe(step.channel));
    },
    async unsubscribeAllChannels(step) {
      return freeing(step, () => client(step.client).unsubscribeAllChannels());
    },
    async close(step) {
      return freeing(step, () => client(step.client).close());
    },
    async eventSources() {
      return { eventSources: describeEventSources().slice(firstEventSource) };
    },
  };

  try {
    for (const step of steps) {
      const action = actions[step.do];
      if (!action) throw new Error(`unknown step ${JSON.stringify(step.do)}`);
      const result = { do: step.do, label: step.label ?? null, ...(await action(step)) };
      results.push(result);
      if (result.ok === false) {
        state.stopped = `step ${results.length - 1} (${step.do}) failed`;
        break;
      }
    }
  } catch (error) {
    state.stopped = `error: ${error.stack ?? error}`;
  } finally {
    for (const each of clients.values()) each.close();
    // Leave the server as this scenario found it, so the next one counts only its own streams.
    state.released = await until(async () => (await connections()) <= startConnections, waitMs);
  }
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function finish(output, code) {
  process.stdout.write(JSON.stringify(output) + '\n', () => process.exit(code));
}

const config = await readStdin();
const output = { timedOut: false, scenarios: {} };
setTimeout(() => {
  output.timedOut = true;
  output.eventSources = describeEventSources();
  finish(output, 2);
}, config.timeoutMs ?? 30000).unref();

for (const [name, steps] of Object.entries(config.scenarios)) {
  // Filled in as the scenario runs, so that a timeout still shows how far it got.
  output.scenarios[name] = { steps: [], received: {}, stopped: null, released: null };
  await runScenario(config, steps, output.scenarios[name]);
}
finish(output, 0);
