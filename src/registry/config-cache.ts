/**
 * Per-process cache of the configuration every device request reads — tenants, trusted CAs,
 * templates, enrollment groups — checked against the store's configuration version once per request
 * (`refresh`), so a request costs one read of that version instead of one read per lookup. Any change
 * committed before a request starts is seen by it: triggers bump the version in the same transaction
 * as the change (migration 002), whichever process or tool makes it.
 *
 * Entries are frozen: callers share them. A lookup started under an older generation never fills the
 * cache (its answer may predate a change another request has already seen).
 */
import type { Store } from './store.js';
import type { CaRecord, Enrollment } from './types.js';

type CachedMethods = Pick<
  Store,
  'getTenant' | 'getTenantByIdScope' | 'getTemplate' | 'findTrustedCasBySubject' | 'findEnrollmentsByCaIds' | 'findGroupEnrollments' | 'findGroupEnrollmentsByName'
>;

/** Bound per kind of lookup; past it the kind is emptied (a fleet has few tenants, CAs and groups). */
const MAX_ENTRIES = 10_000;

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

export class ConfigCache {
  #version: string | undefined;
  #generation = 0;
  readonly #maps = new Map<string, Map<string, unknown>>();
  /** The store with the configuration lookups answered from this cache; everything else goes through. */
  readonly store: Store;

  constructor(private readonly inner: Store) {
    const cached: CachedMethods = {
      getTenant: (id) => this.#lookup('tenant', id, () => inner.getTenant(id)),
      getTenantByIdScope: (scope) => this.#lookup('tenantByScope', scope, () => inner.getTenantByIdScope(scope)),
      getTemplate: (tenantId, id) => this.#lookup('template', `${tenantId}\u0000${id}`, () => inner.getTemplate(tenantId, id)),
      findTrustedCasBySubject: (subject) => this.#list('casBySubject', subject, () => inner.findTrustedCasBySubject(subject)),
      findEnrollmentsByCaIds: (ids) => this.#list('enrollmentsByCa', [...ids].sort().join('\u0000'), () => inner.findEnrollmentsByCaIds(ids)),
      findGroupEnrollments: (tenantId, type) => this.#list('groups', `${tenantId}\u0000${type}`, () => inner.findGroupEnrollments(tenantId, type)),
      findGroupEnrollmentsByName: (name, type) => this.#list('groupsByName', `${name}\u0000${type}`, () => inner.findGroupEnrollmentsByName(name, type)),
    };
    this.store = new Proxy(inner, {
      get(target, prop, receiver) {
        if (Object.hasOwn(cached, prop)) return cached[prop as keyof CachedMethods];
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  /** Call at the start of each request: one read of the configuration version. */
  async refresh(): Promise<void> {
    const v = await this.inner.getConfigVersion();
    if (v !== this.#version) {
      this.#version = v;
      this.#generation++;
      this.#maps.clear();
    }
  }

  async #lookup<T>(kind: string, key: string, load: () => Promise<T>): Promise<T> {
    const map = this.#maps.get(kind);
    if (map?.has(key)) return map.get(key) as T;
    const generation = this.#generation;
    const value = deepFreeze(await load());
    if (generation === this.#generation && this.#version !== undefined) this.#put(kind, key, value);
    return value;
  }

  async #list<T extends CaRecord | Enrollment>(kind: string, key: string, load: () => Promise<T[]>): Promise<T[]> {
    // A copy of the (frozen) list: callers filter and sort what they get.
    return [...(await this.#lookup(kind, key, load))];
  }

  #put(kind: string, key: string, value: unknown): void {
    let map = this.#maps.get(kind);
    if (!map) this.#maps.set(kind, (map = new Map()));
    if (map.size >= MAX_ENTRIES) map.clear();
    map.set(key, value);
  }
}
