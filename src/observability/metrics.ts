import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one process. Label values are reason codes and protocols: bounded sets. */
export class Metrics {
  readonly registry = new Registry();
  readonly attempts: Counter<'protocol' | 'outcome' | 'reason'>;
  readonly duration: Histogram<'protocol' | 'outcome'>;
  readonly certificatesIssued: Counter<'kind'>;
  readonly admissionRejected: Counter<'reason'>;
  readonly inFlight: Gauge;
  readonly queued: Gauge;
  readonly adminRequests: Counter<'method' | 'status'>;
  readonly storeTransactions: Counter;
  readonly storeDatabaseTransactions: Counter;

  constructor(opts: { defaultMetrics?: boolean; admissionStats?: () => { inFlight: number; queued: number }; storeStats?: () => { transactions: number; databaseTransactions: number } } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'fleetpass_process_' });
    this.attempts = new Counter({ name: 'fleetpass_provisioning_attempts_total', help: 'Provisioning attempts by protocol, outcome and reason code.', labelNames: ['protocol', 'outcome', 'reason'], registers: [this.registry] });
    this.duration = new Histogram({
      name: 'fleetpass_provisioning_duration_seconds',
      help: 'Time spent in the provisioning pipeline (excluding TLS handshake).',
      labelNames: ['protocol', 'outcome'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    });
    this.certificatesIssued = new Counter({ name: 'fleetpass_certificates_issued_total', help: 'Certificates issued and recorded.', labelNames: ['kind'], registers: [this.registry] });
    this.admissionRejected = new Counter({ name: 'fleetpass_admission_rejected_total', help: 'Requests deferred by admission control.', labelNames: ['reason'], registers: [this.registry] });
    const stats = opts.admissionStats;
    this.inFlight = new Gauge({ name: 'fleetpass_admission_in_flight', help: 'Provisioning requests being processed.', registers: [this.registry], collect() { if (stats) this.set(stats().inFlight); } });
    this.queued = new Gauge({ name: 'fleetpass_admission_queued', help: 'Provisioning requests waiting for a slot.', registers: [this.registry], collect() { if (stats) this.set(stats().queued); } });
    this.adminRequests = new Counter({ name: 'fleetpass_admin_requests_total', help: 'Admin API requests by method and status.', labelNames: ['method', 'status'], registers: [this.registry] });
    // Kept by the store and read when scraped (prom-client counters have no set: reset, then add the
    // total). Their ratio is group commit's mean group size.
    const store = opts.storeStats;
    const storeCounter = (name: string, help: string, total: (s: { transactions: number; databaseTransactions: number }) => number) =>
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          if (!store) return;
          this.reset();
          this.inc(total(store()));
        },
      });
    this.storeTransactions = storeCounter('fleetpass_store_transactions_total', 'Store transactions run (each registration, renewal, revocation or admin change is one).', (s) => s.transactions);
    this.storeDatabaseTransactions = storeCounter(
      'fleetpass_store_database_transactions_total',
      'Database transactions that carried them: fewer under load on SQLite, where store transactions that wait together commit together (group commit).',
      (s) => s.databaseTransactions,
    );
  }
}
