// The official client (@impulselab/realtime) in Node, subscribed to one channel, for the
// reliability tests: it prints one JSON line per event it sees and exits once it has
// received the number of messages asked for.
//
//   node resume.mjs SERVICE_URL CHANNEL COUNT TIMEOUT_MS
//
// Lines: {"open": n} each time its EventSource (re)opens, {"payload": P} per message
// delivered to the handler, {"done": true} at the end. Exit 0 when COUNT messages arrived,
// 2 at the timeout. Nothing here reconnects or resumes by hand: EventSource does both.
import { EventSource } from "eventsource";
import { createRealtimeClient } from "@impulselab/realtime";

const [serviceUrl, channel, countArg, timeoutArg] = process.argv.slice(2);
const count = Number(countArg);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

let opens = 0;
globalThis.EventSource = class extends EventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("open", () => print({ open: ++opens }));
  }
};

const client = createRealtimeClient({ serviceUrl });
let received = 0;
const timer = setTimeout(() => {
  client.close();
  process.exit(2);
}, Number(timeoutArg));

client.subscribe(channel, ({ payload }) => {
  print({ payload });
  received += 1;
  if (received === count) {
    clearTimeout(timer);
    client.close();
    print({ done: true });
    process.exit(0);
  }
});
