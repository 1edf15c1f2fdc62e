/**
 * The live progress line on stderr: a bar, rate, devices in flight, retries and errors. Redrawn in
 * place on a terminal; elsewhere a plain line every few seconds (so CI logs show progress too).
 */
import type { RunProgress } from './runner.js';

export class ProgressLine {
  private lastPlain = 0;
  private lastDone = 0;
  private lastAt = 0;
  private lastPhaseAt = 0;
  private rate = 0;
  private drawn = false;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr, private readonly plainEveryMs = 5000) {}

  /** A setup phase (manufacturing, enrolling tokens). */
  phase(label: string, done: number, total: number): void {
    if (!this.stream.isTTY) return;
    const now = Date.now();
    if (done < total && now - this.lastPhaseAt < 100) return;
    this.lastPhaseAt = now;
    this.draw(`${label} ${this.bar(done, total, 20)} ${done}/${total}`);
  }

  /** A one-off status text (terminal only), replaced by whatever is drawn next. */
  note(text: string): void {
    if (this.stream.isTTY) this.draw(text);
  }

  update(p: RunProgress): void {
    // Rate over the last interval, smoothed, so the number follows bursts and stalls.
    const dt = (p.elapsedMs - this.lastAt) / 1000;
    if (dt > 0 && this.lastAt > 0) this.rate = this.rate === 0 ? (p.done - this.lastDone) / dt : 0.7 * this.rate + 0.3 * ((p.done - this.lastDone) / dt);
    this.lastAt = p.elapsedMs;
    this.lastDone = p.done;
    const text = `${this.bar(p.done, p.total, 28)} ${p.done}/${p.total}  ${this.rate.toFixed(0)}/s  in flight ${p.inFlight}  ok ${p.onboarded}  rejected ${p.rejected}  lost ${p.lost}  retries ${p.retries}  errors ${p.transientErrors}  ${(p.elapsedMs / 1000).toFixed(0)}s`;
    if (this.stream.isTTY) {
      this.draw(text);
    } else if (p.elapsedMs - this.lastPlain >= this.plainEveryMs || p.done === p.total) {
      this.lastPlain = p.elapsedMs;
      this.stream.write(`${text}\n`);
    }
  }

  /** Erases the current line (after a note). */
  clear(): void {
    if (this.drawn && this.stream.isTTY) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }

  /** Ends the current line, keeping it on screen. */
  done(): void {
    if (this.drawn && this.stream.isTTY) this.stream.write('\n');
    this.drawn = false;
  }

  private bar(done: number, total: number, width: number): string {
    const filled = total > 0 ? Math.min(width, Math.round((done / total) * width)) : 0;
    return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
  }

  private draw(text: string): void {
    const cols = this.stream.columns || 120;
    this.stream.write(`\r${text.slice(0, cols - 1)}\x1b[K`);
    this.drawn = true;
  }
}
