import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { FleetpassError } from '../../src/core/errors.js';
import { checkTemplateBody, compareVersions, parameterVars, renderTemplate, validateParameters } from '../../src/registry/template.js';

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return (e as FleetpassError).code;
  }
  return 'OK';
};

describe('templates', () => {
  it('compares dotted versions numerically', () => {
    assert.ok(compareVersions('1.10.0', '1.9.3') > 0);
    assert.ok(compareVersions('v2.0', '2.0.0') === 0);
    assert.ok(compareVersions('2.0.0-rc1', '2.0.0') < 0);
    assert.ok(Number.isNaN(compareVersions('banana', '1.0')));
  });

  it('renders names, groups, config and certificate profile from parameters', () => {
    const r = renderTemplate(
      { deviceName: '${model}-${registrationId}', groups: ['site-${region}', 'site-${region}'], policy: 'p-${model}', attributes: { owner: '${parameters.customer}' }, configuration: { mqtt: { topic: 'd/${deviceId}' }, list: ['${region}', 3] }, certificateProfile: { organization: 'Acme', validityDays: 90 } },
      { model: 'm1', registrationId: 'SN1', region: 'eu', deviceId: 'dev_1', customer: 'c9' },
    );
    assert.equal(r.deviceName, 'm1-SN1');
    assert.deepEqual(r.groups, ['site-eu']);
    assert.equal(r.policyName, 'p-m1');
    assert.deepEqual(r.attributes, { owner: 'c9' });
    assert.deepEqual(r.configuration, { mqtt: { topic: 'd/dev_1' }, list: ['eu', 3] });
    assert.equal(r.certificate.commonName, 'dev_1');
    assert.deepEqual(r.certificate.uris, ['urn:fleetpass:device:dev_1']);
    assert.equal(r.certificate.validityDays, 90);
  });

  it('names a missing template parameter', () => {
    assert.throws(() => renderTemplate({ deviceName: '${model}' }, { registrationId: 'x' }), (e: FleetpassError) => e.code === 'PARAMETER_INVALID' && /"model"/.test(e.message));
  });

  it('validates region, models, firmware per model and patterns with the right reason codes', () => {
    const body = { validation: { allowedRegions: ['eu'], allowedModels: ['a', 'b'], minFirmware: { a: '2.0.0', '*': '1.0.0' }, parameterPatterns: { batch: '[0-9]{4}' }, requiredParameters: ['batch'] } };
    assert.equal(code(() => validateParameters(body, { region: 'eu', model: 'a', firmwareVersion: '2.0.1', batch: '1234' })), 'OK');
    assert.equal(code(() => validateParameters(body, { region: 'us', model: 'a', firmwareVersion: '2.0.1', batch: '1234' })), 'REGION_MISMATCH');
    assert.equal(code(() => validateParameters(body, { model: 'a', firmwareVersion: '2.0.1', batch: '1234' })), 'REGION_MISMATCH');
    assert.equal(code(() => validateParameters(body, { region: 'eu', model: 'c', firmwareVersion: '9', batch: '1234' })), 'PARAMETER_INVALID');
    assert.equal(code(() => validateParameters(body, { region: 'eu', model: 'a', firmwareVersion: '1.9', batch: '1234' })), 'FIRMWARE_UNSUPPORTED');
    assert.equal(code(() => validateParameters(body, { region: 'eu', model: 'b', firmwareVersion: '1.0.0', batch: '1234' })), 'OK');
    assert.equal(code(() => validateParameters(body, { region: 'eu', model: 'b', batch: '1234' })), 'FIRMWARE_UNSUPPORTED');
    assert.equal(code(() => validateParameters(body, { region: 'eu', model: 'b', firmwareVersion: '1.0.0', batch: '12345' })), 'PARAMETER_INVALID');
    assert.equal(code(() => validateParameters(body, { region: 'eu', model: 'b', firmwareVersion: '1.0.0' })), 'PARAMETER_INVALID');
  });

  it('types known parameters strictly and ignores unknown nested ones', () => {
    assert.deepEqual(parameterVars({ model: 'x', count: 3, nested: { a: 1 }, flag: true }), { model: 'x', count: '3', flag: 'true' });
    assert.equal(code(() => parameterVars({ firmwareVersion: 2 })), 'PARAMETER_INVALID');
    assert.equal(code(() => parameterVars({ region: '' })), 'PARAMETER_INVALID');
    assert.equal(code(() => parameterVars({ note: 'x'.repeat(2000) })), 'PARAMETER_INVALID');
  });

  it('checks template bodies before they are stored', () => {
    assert.equal(checkTemplateBody({ validation: { parameterPatterns: { a: '(' } } }), 'validation.parameterPatterns.a is not a valid regular expression');
    assert.match(checkTemplateBody({ validation: { minFirmware: { x: 'latest' } } }) ?? '', /not a dotted version/);
    assert.equal(checkTemplateBody({ deviceName: '${registrationId}' }), undefined);
  });
});
