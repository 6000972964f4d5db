// Fakes for the unit tests: a manual clock with timers, and event emitters.

export function fakeClock(start = 1_000_000) {
  let now = start;
  let next = 1;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout(f, ms) {
      const id = next++;
      timers.set(id, { at: now + (ms || 0), f });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** Moves time forward, running due timers in order. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let due = null;
        for (const [id, t] of timers) {
          if (t.at <= end && (due === null || t.at < due[1].at)) {
            due = [id, t];
          }
        }
        if (!due) {
          break;
        }
        timers.delete(due[0]);
        now = due[1].at;
        due[1].f();
      }
      now = end;
    },
    pending: () => timers.size,
  };
}

export class Emitter {
  constructor() {
    this.handlers = {};
  }
  on(name, f) {
    (this.handlers[name] = this.handlers[name] || []).push(f);
  }
  emit(name, ...args) {
    for (const f of this.handlers[name] || []) {
      f(...args);
    }
  }
}

/** Lets pending promise callbacks run. */
export const settle = () => new Promise((r) => setImmediate(r));
