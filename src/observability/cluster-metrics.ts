import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { AggregatorRegistry, type Registry } from 'prom-client';

const REQUEST = 'fleetpass:metrics-request';
const RESPONSE = 'fleetpass:metrics-response';

export interface MetricsText {
  contentType: string;
  text: string;
}

/**
 * Primary side of `serve --workers N`: a scrape that lands on any worker is answered with the sum
 * over all workers (prom-client's AggregatorRegistry asks each worker for its registry).
 */
export function servePrimaryMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message: { type?: string; id?: string }) => {
    if (message?.type !== REQUEST) return;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: RESPONSE, id: message.id, text, contentType: aggregator.contentType }),
      (err: unknown) => worker.send({ type: RESPONSE, id: message.id, error: (err as Error).message }),
    );
  });
}

/** Worker side: registers this worker's registry for aggregation and returns the scrape function. */
export function workerMetricsSource(registry: Registry, timeoutMs = 5000): () => Promise<MetricsText> {
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one installs prom-client's worker-side listener that answers the primary's requests.
  new AggregatorRegistry();
  const pending = new Map<string, (m: MetricsText | Error) => void>();
  process.on('message', (message: { type?: string; id?: string; text?: string; contentType?: string; error?: string }) => {
    if (message?.type !== RESPONSE || !message.id) return;
    const done = pending.get(message.id);
    pending.delete(message.id);
    done?.(message.error ? new Error(message.error) : { text: message.text ?? '', contentType: message.contentType ?? registry.contentType });
  });
  return () =>
    new Promise<MetricsText>((resolve) => {
      const id = randomUUID();
      // If the primary does not answer, this worker's own metrics are better than none.
      const fallback = async () => ({ text: await registry.metrics(), contentType: registry.contentType });
      const timer = setTimeout(() => {
        pending.delete(id);
        void fallback().then(resolve);
      }, timeoutMs);
      pending.set(id, (m) => {
        clearTimeout(timer);
        if (m instanceof Error) void fallback().then(resolve);
        else resolve(m);
      });
      process.send?.({ type: REQUEST, id });
    });
}
