/**
 * The proxy's small writes, issued together at the end of the event-loop turn that produced
 * them instead of one by one while the turn's reads are still being handled: per HTTP request
 * the request head to the upstream and the whole small response to the client; in L4 mode the
 * small chunks read from either side (stream/tcp-session.ts).
 *
 * Under load one turn handles many ready sockets. Writing each answer as soon as it is made
 * interleaves reads and writes, so the reader on the other end (the load generator, a
 * backend) is woken, runs dry and sleeps again between our writes: every write then pays a
 * wake-up of an idle CPU, which on a VM is most of a loopback write's cost. Issued back to
 * back, the writes of a turn find the reader already awake. Measured on the bench (wrk -c64,
 * proxy pinned): see docs/decisions/bench-journal.md.
 *
 * `setImmediate` runs right after the poll phase, i.e. in the same turn: nothing waits on a
 * timer, and a quiet proxy (one request per turn) writes as soon as before plus a few
 * microseconds. An item whose request or response ended meanwhile (client gone, attempt
 * aborted) checks that itself in `flushWrite` and writes nothing.
 */

export interface DeferredWrite {
  /** Does the deferred write now, or nothing if what it belonged to is over. */
  flushWrite(): void;
}

const queue: DeferredWrite[] = [];
let scheduled = false;

/** Queues `item` to write at the end of this event-loop turn. */
export function deferWrite(item: DeferredWrite): void {
  queue.push(item);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
}

function flush(): void {
  scheduled = false;
  let i = 0;
  try {
    // Items queued while flushing (a write's synchronous side effects) go in this same pass.
    for (; i < queue.length; i++) queue[i]!.flushWrite();
    i = -1;
  } finally {
    if (i === -1) {
      queue.length = 0;
    } else {
      // queue[i] threw (the exception propagates as from any socket callback); the rest still go.
      queue.splice(0, i + 1);
      if (queue.length > 0) {
        scheduled = true;
        setImmediate(flush);
      }
    }
  }
}
