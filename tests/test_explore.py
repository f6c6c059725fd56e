"""``segearth-ov explore``: the session and its routes (Flask's test client), and the page
driven in a real headless Chromium as a person uses it."""
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import REPO, shared_path
from segearth_ov.apis.explore import ExploreSession, create_app
from segearth_ov.apis.inference import OpenVocabSegmenter

KOELN = shared_path('rs_samples', 'unlabeled', 'oem_koeln_50.tif')
TINY = dict(clip='ViT-S-16', pretrained='none', device='cpu',
            prompt_templates=['a satellite photo of {}.'], tile=96, overlap=16)


def write_geotiff(path, height=80, width=100):
    pixels = np.random.default_rng(0).integers(0, 255, (3, height, width), np.uint8)
    with rasterio.open(path, 'w', driver='GTiff', width=width, height=height, count=3,
                       dtype='uint8', crs='EPSG:32633',
                       transform=from_origin(400000, 5000000, 0.5, 0.5)) as dst:
        dst.write(pixels)
    return path


@pytest.fixture
def client(tmp_path):
    scene = write_geotiff(tmp_path / 'scene.tif')

    def build(method, choices):
        return OpenVocabSegmenter('road;tree', method=method, **dict(TINY, **choices))
    session = ExploreSession([scene], tmp_path / 'app', build, 'segearth-ov',
                             dict(upsampler='none'), ['--clip', 'ViT-S-16'])
    app = create_app(session, max_upload=64 * 1024)
    yield app.test_client(), session
    session.close()


def test_segment_then_new_words_reuse_the_prepared_image(client):
    client, session = client
    first = client.post('/api/segment', json=dict(input='i0', classes='road;tree,forest',
                                                  region=[10, 70, 20, 90])).get_json()
    assert not first['from_prepared'] and [c['name'] for c in first['legend']] == ['road',
                                                                                  'tree']
    assert sum(c['pixels'] for c in first['legend']) == 60 * 70
    progress = client.get('/api/progress').get_json()  # the first pass counted its tiles
    assert progress['phase'] == 'idle' and progress['done'] == progress['total'] == 1
    assert first['legend'][0]['area_m2'] == pytest.approx(first['legend'][0]['pixels'] * 0.25)
    second = client.post('/api/segment', json=dict(input='i0', classes='water;road;roof',
                                                   prob_thd='0.2',
                                                   region=[10, 70, 20, 90])).get_json()
    assert second['from_prepared'] and len(second['legend']) == 3
    assert "--prob-thd 0.2" in second['command'] and "'water;road;roof'" in second['command']
    assert '--clip ViT-S-16 --upsampler none' in second['command']
    tif = client.get(f'/api/result/{second["result"]}/labels.tif')
    assert tif.status_code == 200
    with rasterio.open(io.BytesIO(tif.data)) as labels:
        assert labels.crs.to_epsg() == 32633 and labels.shape == (60, 70)
        assert labels.transform == from_origin(400010, 4999995, 0.5, 0.5)
    gpkg = client.get(f'/api/result/{second["result"]}/polygons.gpkg')
    assert gpkg.status_code == 200 and gpkg.data[:16] == b'SQLite format 3\x00'


def test_bad_input_gets_one_line_on_the_page(client, tmp_path):
    client, session = client
    cases = [(dict(input='i0', classes='road;road'), 'is given twice'),
             (dict(input='i0', classes=''), 'the class list is empty'),
             (dict(input='i9', classes='road'), 'no input'),
             (dict(input='i0', classes='road', region=[0, 500, 0, 10]), 'is not inside'),
             (dict(input='i0', classes='road', prob_thd='nan'), 'finite number')]
    for body, message in cases:
        answer = client.post('/api/segment', json=body)
        assert answer.status_code == 400 and message in answer.get_json()['error'], body
        assert 'Traceback' not in answer.get_json()['error']
    not_image = client.post('/api/upload', data=dict(image=(io.BytesIO(b'hello'), 'a.png')))
    assert not_image.status_code == 400 and 'as an image' in not_image.get_json()['error']
    wrong_kind = client.post('/api/upload', data=dict(image=(io.BytesIO(b'x'), 'a.exe')))
    assert 'not an image format' in wrong_kind.get_json()['error']
    too_big = client.post('/api/upload', data=dict(image=(io.BytesIO(b'x' * 70000), 'a.png')))
    assert too_big.status_code == 413 and 'upload limit' in too_big.get_json()['error']
    assert list((tmp_path / 'app' / 'uploads').iterdir()) == []  # refused uploads removed


def test_only_its_own_files_are_served(client, tmp_path):
    client, session = client
    (tmp_path / 'secret.txt').write_text('no')
    result = client.post('/api/segment', json=dict(input='i0', classes='road')).get_json()
    for url in ('/static/../../secret.txt', '/static/session.py',
                f'/api/result/{result["result"]}/..%2F..%2Fsecret.txt',
                f'/api/result/{result["result"]}/command.py', '/api/result/nope/overlay.png',
                '/api/preview/../scene.tif'):
        answer = client.get(url)
        assert answer.status_code == 404 and b'no' not in answer.data[:2], url
    assert client.get('/api/preview/i0').data[:8] == b'\x89PNG\r\n\x1a\n'


# --- the page in a real browser ----------------------------------------------------------------

def browser():
    """A headless Chromium from the distribution (tools/run_tests.sh installs it)."""
    driver_path, chromium = shutil.which('chromedriver'), shutil.which('chromium')
    if not (driver_path and chromium):
        pytest.skip('Debian\'s chromium and chromium-driver are not installed here '
                    '(tools/run_tests.sh installs them where apt-get may)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage',
                     '--window-size=1400,1100'):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def start_app(tmp_path):
    process = subprocess.Popen(
        [sys.executable, '-m', 'segearth_ov.apis.cli', 'explore', str(KOELN), '--clip',
         'ViT-S-16', '--pretrained', 'none', '--upsampler', 'none', '--port', '0',
         '--tile', '256', '--overlap', '32', '--out', str(tmp_path / 'app'),
         '--prompt-templates', 'a satellite photo of {}.'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS='2'))
    deadline = time.time() + 120
    printed = []
    for line in process.stdout:
        printed.append(line)
        if 'open http://' in line:
            # keep reading what it prints, so a full pipe never blocks it
            reader = threading.Thread(target=lambda: printed.extend(process.stdout),
                                      daemon=True)
            reader.start()
            return process, line.split('open ')[1].split()[0], printed, reader
        if time.time() > deadline:
            break
    process.kill()
    pytest.fail(f'explore did not start: {"".join(printed)}')


def test_the_page_as_a_person_uses_it(tmp_path):
    if not KOELN.is_file():
        pytest.skip(f'{KOELN} is absent (the shared real tiles)')
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    process, url, printed, reader = start_app(tmp_path)
    try:
        driver.execute_cdp_cmd('Browser.setDownloadBehavior', dict(
            behavior='allow', downloadPath=str(tmp_path / 'downloads')))
        find = lambda element_id: driver.find_element(By.ID, element_id)
        wait = WebDriverWait(driver, 180)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-ready'))
        wait.until(lambda d: d.execute_script('return arguments[0].naturalWidth',
                                              find('preview')))
        # a region: drag over the upper left part of the preview
        preview = find('preview')
        size = preview.size
        ActionChains(driver).move_to_element_with_offset(
            preview, -size['width'] // 2 + 40, -size['height'] // 2 + 30).click_and_hold() \
            .move_by_offset(size['width'] // 3, size['height'] // 3).release().perform()
        top, bottom, left, right = (int(v) for part in find('region-text').text.split(', ')
                                    for v in part.split('-'))
        assert 0 < top < bottom < 1000 and 0 < left < right < 1000
        classes = find('classes')
        classes.clear()
        classes.send_keys('building,roof;road;tree;water')
        find('segment').click()
        wait.until(lambda d: find('overlay').get_attribute('data-ready'))
        first = find('overlay').get_attribute('data-ready')
        assert 'First pass' in find('from-prepared').text
        legend = [item.text for item in driver.find_elements(By.CSS_SELECTOR, '#legend li')]
        assert legend == ['building', 'road', 'tree', 'water']
        rows = [row.find_elements(By.TAG_NAME, 'td') for row in
                driver.find_elements(By.CSS_SELECTOR, '#areas tbody tr')]
        pixels = [int(cells[1].text) for cells in rows]
        assert sum(pixels) == (bottom - top) * (right - left)
        assert [float(cells[3].text) for cells in rows] == pytest.approx(
            [n * 0.25 for n in pixels], abs=0.06)  # 0.5 m pixels, EPSG:25832
        ActionChains(driver).move_to_element(find('overlay')).perform()
        wait.until(lambda d: find('pointer-class').text in legend)
        # new words: from the prepared image
        classes.clear()
        classes.send_keys('grass;building;car')
        find('segment').click()
        wait.until(lambda d: find('overlay').get_attribute('data-ready') not in (None, first))
        assert 'From the prepared image' in find('from-prepared').text
        legend = [item.text for item in driver.find_elements(By.CSS_SELECTOR, '#legend li')]
        assert legend == ['grass', 'building', 'car']
        ActionChains(driver).move_to_element_with_offset(find('overlay'), 5, 5).perform()
        wait.until(lambda d: find('pointer-class').text in legend)
        assert "'grass;building;car'" in find('command').text
        if os.environ.get('SEGEARTH_OV_SCREENSHOT'):
            driver.save_screenshot(os.environ['SEGEARTH_OV_SCREENSHOT'])
        # the labels, downloaded by the browser, are georeferenced as the input
        find('download-labels').click()
        target = tmp_path / 'downloads' / 'labels.tif'
        wait.until(lambda d: target.is_file())
        with rasterio.open(KOELN) as source, rasterio.open(target) as labels:
            assert labels.crs == source.crs
            assert labels.transform == source.transform @ source.transform.translation(
                left, top)
            assert labels.shape == (bottom - top, right - left)
        # bad input: a name twice, then a file that is not an image
        classes.clear()
        classes.send_keys('road;road')
        find('segment').click()
        wait.until(lambda d: find('error').text)
        assert 'given twice' in find('error').text and 'Traceback' not in find('error').text
        fake = tmp_path / 'notes.png'
        fake.write_text('not an image')
        find('upload').send_keys(str(fake))
        wait.until(lambda d: 'as an image' in find('error').text)
    finally:
        driver.quit()
        process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f'explore did not stop within 60 s of Ctrl-C; it printed: '
                        f'{"".join(printed)[-3000:]}')
    reader.join(timeout=30)  # it ends with the output
    assert process.returncode == 0 and 'stopped' in ''.join(printed)
