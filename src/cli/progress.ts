/** A one-line progress bar on stderr (only when it is a terminal; otherwise silent except the end). */
export class Progress {
  private last = 0;
  private readonly started = Date.now();
  constructor(private readonly label: string, private readonly total: number | null, private readonly stream: NodeJS.WriteStream = process.stderr) {}

  update(done: number, extra = ''): void {
    if (!this.stream.isTTY) return;
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    const rate = done / Math.max(0.001, (now - this.started) / 1000);
    let bar: string;
    if (this.total) {
      const width = 30;
      const filled = Math.min(width, Math.round((done / this.total) * width));
      bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${this.total} `;
    } else {
      bar = `${done} `;
    }
    this.stream.write(`\r${this.label} ${bar}${rate.toFixed(0)}/s ${extra}`.padEnd(100));
  }

  done(): void {
    if (this.stream.isTTY) this.stream.write('\n');
  }
}
