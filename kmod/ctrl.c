// SPDX-License-Identifier: GPL-2.0
/*
 * unbd_ublk control path: /dev/ublk-control and the device lifecycle.
 *
 * A device is born by ADD_DEV (ublkcN, tag set and queues), gets a disk on
 * START_DEV, loses it on STOP_DEV and is unlinked by DEL_DEV; its memory
 * goes with the last reference (an open ublkcN, a disk still referenced).
 * When a server dies, a recovery device is quiesced (QUIESCED) and waits for
 * START_USER_RECOVERY / END_USER_RECOVERY; any other device is stopped.
 */
#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/cpumask.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "unbd_ublk.h"

static DEFINE_IDR(unbd_idr);
static DEFINE_SPINLOCK(unbd_idr_lock);
static DECLARE_WAIT_QUEUE_HEAD(unbd_release_wq);
static struct class *unbd_class;
static dev_t unbd_cdev_base;

/* ---- references ---- */

static struct unbd_dev *unbd_dev_get(u32 id)
{
	struct unbd_dev *dev;

	spin_lock(&unbd_idr_lock);
	dev = idr_find(&unbd_idr, id);
	if (dev && !READ_ONCE(dev->deleting))
		get_device(&dev->cdev_dev);
	else
		dev = NULL;
	spin_unlock(&unbd_idr_lock);
	return dev;
}

static void unbd_dev_put(struct unbd_dev *dev)
{
	put_device(&dev->cdev_dev);
}

static bool unbd_dev_released(u32 id, const struct unbd_dev *dev)
{
	bool released;

	spin_lock(&unbd_idr_lock);
	released = idr_find(&unbd_idr, id) != dev;
	spin_unlock(&unbd_idr_lock);
	return released;
}

static void unbd_dev_release(struct device *d)
{
	struct unbd_dev *dev = container_of(d, struct unbd_dev, cdev_dev);
	u32 id = dev->info.dev_id;

	cancel_delayed_work_sync(&dev->monitor);
	unbd_queues_free(dev);
	if (dev->tag_set_ready)
		blk_mq_free_tag_set(&dev->tag_set);
	mutex_destroy(&dev->mutex);
	kfree(dev);

	spin_lock(&unbd_idr_lock);
	idr_remove(&unbd_idr, id);
	spin_unlock(&unbd_idr_lock);
	wake_up_all(&unbd_release_wq);
}

static void unbd_free_disk(struct gendisk *disk)
{
	unbd_dev_put(disk->private_data);
}

static const struct block_device_operations unbd_bdev_ops = {
	.owner		= THIS_MODULE,
	.free_disk	= unbd_free_disk,
};

/* ---- lifecycle helpers (dev->mutex held) ---- */

/*
 * Tear the disk down. Requests still parked for a missing server fail, the
 * server serves what it holds until del_gendisk() drains the queue, then
 * every command it parked completes with UBLK_IO_RES_ABORT so it can exit.
 */
void unbd_dev_stop(struct unbd_dev *dev)
{
	struct gendisk *disk = dev->disk;
	int i;

	if (!disk) {
		for (i = 0; i < dev->info.nr_hw_queues; i++)
			unbd_queue_cancel(dev->queues[i]);
		return;
	}

	WRITE_ONCE(dev->stopping, true);
	if (dev->info.state != UBLK_S_DEV_LIVE) {
		for (i = 0; i < dev->info.nr_hw_queues; i++)
			unbd_queue_cancel(dev->queues[i]);
	}
	if (dev->quiesced) {
		blk_mq_unquiesce_queue(disk->queue);
		dev->quiesced = false;
	}
	del_gendisk(disk);
	/* A dead disk fails the scan at once; it must not outlive the disk. */
	flush_work(&dev->partscan);
	for (i = 0; i < dev->info.nr_hw_queues; i++)
		unbd_queue_cancel(dev->queues[i]);
	dev->disk = NULL;
	dev->recovering = false;
	unbd_set_state(dev, UBLK_S_DEV_DEAD, dev->info.ublksrv_pid);
	put_disk(disk);
	wake_up_all(&dev->waitq);
}

/*
 * The partition table is read by the server like any other data, so the
 * scan must not run inside START_DEV: there it holds dev->mutex, and a
 * server that dies before serving it (a core dump waits for the thread
 * stuck in START_DEV) could then never be noticed, recovered or deleted.
 * Here it blocks only this worker; unbd_dev_stop() flushes it after
 * del_gendisk(), which waits for the disk's open_mutex held below.
 */
static void unbd_partscan_work(struct work_struct *work)
{
	struct unbd_dev *dev = container_of(work, struct unbd_dev, partscan);
	struct gendisk *disk = dev->disk;
	int ret;

	clear_bit(GD_SUPPRESS_PART_SCAN, &disk->state);
	mutex_lock(&disk->open_mutex);
	ret = bdev_disk_changed(disk, false);
	mutex_unlock(&disk->open_mutex);
	if (ret && ret != -ENXIO)
		dev_warn(&dev->cdev_dev, "partition scan failed: %d\n", ret);
}

/* Called by the monitor after cancelling the queues of a dead server. */
void unbd_dev_handle_death(struct unbd_dev *dev)
{
	mutex_lock(&dev->mutex);
	if (!dev->disk || dev->stopping || dev->deleting)
		goto out;
	if (unbd_recovery(dev)) {
		/*
		 * queue_rq already holds I/O back for dead queues; quiescing
		 * just stops it from retrying, so there is no need to wait for
		 * an RCU grace period before reporting QUIESCED.
		 */
		if (!dev->quiesced) {
			blk_mq_quiesce_queue_nowait(dev->disk->queue);
			dev->quiesced = true;
		}
		dev->recovering = false;
		unbd_set_state(dev, UBLK_S_DEV_QUIESCED, dev->info.ublksrv_pid);
		dev_info(&dev->cdev_dev, "server gone, quiesced for recovery\n");
	} else {
		/* Report the death at once; del_gendisk() may take a while. */
		unbd_set_state(dev, UBLK_S_DEV_DEAD, dev->info.ublksrv_pid);
		dev_info(&dev->cdev_dev, "server gone, stopping\n");
		unbd_dev_stop(dev);
	}
out:
	mutex_unlock(&dev->mutex);
}

/* ---- parameters ---- */

static int unbd_validate_params(const struct unbd_dev *dev,
				const struct ublk_params *p)
{
	const struct ublk_param_basic *b = &p->basic;
	const struct ublk_param_discard *d = &p->discard;

	if (p->types & UBLK_PARAM_TYPE_BASIC) {
		if (b->logical_bs_shift < SECTOR_SHIFT ||
		    b->logical_bs_shift > PAGE_SHIFT)
			return -EINVAL;
		if (b->physical_bs_shift < b->logical_bs_shift ||
		    b->physical_bs_shift > 16)
			return -EINVAL;
		if (b->io_min_shift > 31 || b->io_opt_shift > 31)
			return -EINVAL;
		if (b->max_sectors && b->max_sectors < (PAGE_SIZE >> SECTOR_SHIFT))
			return -EINVAL;
		if (b->chunk_sectors && !is_power_of_2(b->chunk_sectors))
			return -EINVAL;
		if (b->virt_boundary_mask &&
		    !is_power_of_2(b->virt_boundary_mask + 1))
			return -EINVAL;
	}
	if (p->types & UBLK_PARAM_TYPE_DISCARD) {
		if (d->max_discard_sectors &&
		    (!d->discard_granularity ||
		     !is_power_of_2(d->discard_granularity)))
			return -EINVAL;
	}
	return 0;
}

static void unbd_apply_params(struct unbd_dev *dev, struct gendisk *disk)
{
	const struct ublk_param_basic *b = &dev->params.basic;
	const struct ublk_param_discard *d = &dev->params.discard;
	struct request_queue *q = disk->queue;
	unsigned int max_sectors = dev->info.max_io_buf_bytes >> SECTOR_SHIFT;

	if (b->max_sectors)
		max_sectors = min(max_sectors, b->max_sectors);

	blk_queue_logical_block_size(q, 1U << b->logical_bs_shift);
	blk_queue_physical_block_size(q, 1U << b->physical_bs_shift);
	blk_queue_io_min(q, 1U << b->io_min_shift);
	blk_queue_io_opt(q, 1U << b->io_opt_shift);
	blk_queue_max_hw_sectors(q, max_sectors);
	/* Data is copied page by page, so segments cost nothing. */
	blk_queue_max_segments(q, USHRT_MAX);
	blk_queue_max_segment_size(q, UINT_MAX);
	if (b->chunk_sectors)
		blk_queue_chunk_sectors(q, b->chunk_sectors);
	if (b->virt_boundary_mask)
		blk_queue_virt_boundary(q, b->virt_boundary_mask);
	blk_queue_write_cache(q, b->attrs & UBLK_ATTR_VOLATILE_CACHE,
			      b->attrs & UBLK_ATTR_FUA);
	if (!(b->attrs & UBLK_ATTR_ROTATIONAL))
		blk_queue_flag_set(QUEUE_FLAG_NONROT, q);
	set_capacity(disk, b->dev_sectors);
	if (b->attrs & UBLK_ATTR_READ_ONLY)
		set_disk_ro(disk, true);

	if (dev->params.types & UBLK_PARAM_TYPE_DISCARD) {
		blk_queue_max_discard_sectors(q, d->max_discard_sectors);
		q->limits.discard_granularity = d->discard_granularity;
		q->limits.discard_alignment = d->discard_alignment;
		blk_queue_max_write_zeroes_sectors(q,
						   d->max_write_zeroes_sectors);
		/* A descriptor carries one range. */
		blk_queue_max_discard_segments(q, 1);
	}
}

/* ---- commands ---- */

static int unbd_ctrl_add(const struct ublksrv_ctrl_cmd *hdr)
{
	void __user *uinfo = u64_to_user_ptr(hdr->addr);
	struct ublksrv_ctrl_dev_info info;
	struct unbd_dev *dev;
	int id, ret;

	if (hdr->len < sizeof(info) || !hdr->addr)
		return -EINVAL;
	if (copy_from_user(&info, uinfo, sizeof(info)))
		return -EFAULT;
	if (!info.nr_hw_queues ||
	    info.nr_hw_queues > min_t(unsigned int, UNBD_MAX_QUEUES,
				      nr_cpu_ids))
		return -EINVAL;
	if (!info.queue_depth || info.queue_depth > UBLK_MAX_QUEUE_DEPTH)
		return -EINVAL;
	if (hdr->dev_id != U32_MAX && hdr->dev_id >= UNBD_MAX_DEVS)
		return -EINVAL;

	info.max_io_buf_bytes = clamp_t(u32, info.max_io_buf_bytes,
					PAGE_SIZE, UNBD_MAX_IO_BYTES);
	info.max_io_buf_bytes = round_down(info.max_io_buf_bytes, PAGE_SIZE);
	info.flags &= UNBD_FEATURES;
	/* Completions always go through io_uring_cmd_complete_in_task(). */
	info.flags |= UBLK_F_URING_CMD_COMP_IN_TASK;
	if (!(info.flags & UBLK_F_USER_RECOVERY))
		info.flags &= ~UBLK_F_USER_RECOVERY_REISSUE;
	info.state = UBLK_S_DEV_DEAD;
	info.ublksrv_pid = -1;

	dev = kzalloc(struct_size(dev, queues, info.nr_hw_queues), GFP_KERNEL);
	if (!dev)
		return -ENOMEM;

	idr_preload(GFP_KERNEL);
	spin_lock(&unbd_idr_lock);
	if (hdr->dev_id == U32_MAX)
		id = idr_alloc(&unbd_idr, NULL, 0, UNBD_MAX_DEVS, GFP_NOWAIT);
	else
		id = idr_alloc(&unbd_idr, NULL, hdr->dev_id, hdr->dev_id + 1,
			       GFP_NOWAIT);
	spin_unlock(&unbd_idr_lock);
	idr_preload_end();
	if (id < 0) {
		kfree(dev);
		return id == -ENOSPC ? -EEXIST : id;
	}

	info.dev_id = id;
	dev->info = info;
	mutex_init(&dev->mutex);
	spin_lock_init(&dev->info_lock);
	init_waitqueue_head(&dev->waitq);
	INIT_DELAYED_WORK(&dev->monitor, unbd_monitor_work);
	INIT_WORK(&dev->partscan, unbd_partscan_work);

	/* From here on, the release callback undoes everything. */
	device_initialize(&dev->cdev_dev);
	dev->cdev_dev.class = unbd_class;
	dev->cdev_dev.devt = MKDEV(MAJOR(unbd_cdev_base), id);
	dev->cdev_dev.release = unbd_dev_release;
	ret = dev_set_name(&dev->cdev_dev, "ublkc%d", id);
	if (ret)
		goto fail;

	ret = unbd_queues_alloc(dev);
	if (ret)
		goto fail;

	dev->tag_set.ops = &unbd_mq_ops;
	dev->tag_set.nr_hw_queues = info.nr_hw_queues;
	dev->tag_set.queue_depth = info.queue_depth;
	dev->tag_set.numa_node = NUMA_NO_NODE;
	/*
	 * No I/O scheduler by default, as loop and virtio-blk: the server
	 * orders and batches itself, and with one hardware queue mq-deadline
	 * would run every unplugged request (O_DIRECT reads) from kblockd.
	 */
	dev->tag_set.flags = BLK_MQ_F_SHOULD_MERGE | BLK_MQ_F_NO_SCHED_BY_DEFAULT;
	dev->tag_set.driver_data = dev;
	ret = blk_mq_alloc_tag_set(&dev->tag_set);
	if (ret)
		goto fail;
	dev->tag_set_ready = true;

	/* The server learns its id before the node can be opened. */
	if (copy_to_user(uinfo, &dev->info, sizeof(dev->info))) {
		ret = -EFAULT;
		goto fail;
	}

	cdev_init(&dev->cdev, &unbd_cdev_fops);
	dev->cdev.owner = THIS_MODULE;
	ret = cdev_device_add(&dev->cdev, &dev->cdev_dev);
	if (ret)
		goto fail;

	spin_lock(&unbd_idr_lock);
	idr_replace(&unbd_idr, dev, id);
	spin_unlock(&unbd_idr_lock);
	return 0;

fail:
	unbd_dev_put(dev);
	return ret;
}

/* Unlink the device; its id stays taken until the last reference goes. */
static int unbd_ctrl_del(struct unbd_dev *dev)
{
	mutex_lock(&dev->mutex);
	if (dev->deleting) {
		mutex_unlock(&dev->mutex);
		return -ENODEV;
	}
	WRITE_ONCE(dev->deleting, true);
	unbd_dev_stop(dev);
	mutex_unlock(&dev->mutex);

	cdev_device_del(&dev->cdev, &dev->cdev_dev);
	/* The reference the id table held. */
	unbd_dev_put(dev);
	return 0;
}

static int unbd_ctrl_start(struct unbd_dev *dev,
			   const struct ublksrv_ctrl_cmd *hdr)
{
	int pid = (int)hdr->data[0];
	struct gendisk *disk;
	int ret;

	if (pid <= 0)
		return -EINVAL;
	if (wait_event_interruptible(dev->waitq,
				     unbd_all_queues_ready(dev) ||
				     unbd_any_queue_dead(dev)))
		return -EINTR;

	mutex_lock(&dev->mutex);
	if (dev->deleting) {
		ret = -ENODEV;
		goto out;
	}
	if (dev->started_once) {
		ret = -EALREADY;
		goto out;
	}
	if (!(dev->params.types & UBLK_PARAM_TYPE_BASIC)) {
		ret = -EINVAL;
		goto out;
	}
	if (!unbd_all_queues_ready(dev)) {
		ret = -ENODEV;
		goto out;
	}

	disk = blk_mq_alloc_disk(&dev->tag_set, dev);
	if (IS_ERR(disk)) {
		ret = PTR_ERR(disk);
		goto out;
	}
	snprintf(disk->disk_name, sizeof(disk->disk_name), "ublkb%u",
		 dev->info.dev_id);
	disk->fops = &unbd_bdev_ops;
	disk->private_data = dev;
	unbd_apply_params(dev, disk);
	/* Scanned by unbd_partscan_work(), not by add_disk(). */
	set_bit(GD_SUPPRESS_PART_SCAN, &disk->state);

	/* Dropped by unbd_free_disk(): the disk may outlive DEL_DEV. */
	get_device(&dev->cdev_dev);
	dev->disk = disk;
	dev->started_once = true;
	unbd_set_state(dev, UBLK_S_DEV_LIVE, pid);
	ret = add_disk(disk);
	if (ret) {
		dev->disk = NULL;
		unbd_set_state(dev, UBLK_S_DEV_DEAD, -1);
		/* ->free_disk only runs for disks that were added. */
		put_disk(disk);
		unbd_dev_put(dev);
	} else {
		schedule_work(&dev->partscan);
	}
out:
	mutex_unlock(&dev->mutex);
	return ret;
}

static int unbd_ctrl_stop(struct unbd_dev *dev)
{
	mutex_lock(&dev->mutex);
	unbd_dev_stop(dev);
	mutex_unlock(&dev->mutex);
	return 0;
}

static int unbd_ctrl_get_info(struct unbd_dev *dev,
			      const struct ublksrv_ctrl_cmd *hdr)
{
	struct ublksrv_ctrl_dev_info info;

	if (hdr->len < sizeof(info) || !hdr->addr)
		return -EINVAL;
	spin_lock(&dev->info_lock);
	info = dev->info;
	spin_unlock(&dev->info_lock);
	if (copy_to_user(u64_to_user_ptr(hdr->addr), &info, sizeof(info)))
		return -EFAULT;
	return 0;
}

static int unbd_ctrl_set_params(struct unbd_dev *dev,
				const struct ublksrv_ctrl_cmd *hdr)
{
	struct ublk_params p = {};
	u32 len;
	int ret;

	if (hdr->len < offsetofend(struct ublk_params, types) || !hdr->addr)
		return -EINVAL;
	len = min_t(u32, hdr->len, sizeof(p));
	if (copy_from_user(&p, u64_to_user_ptr(hdr->addr), len))
		return -EFAULT;
	/* Only the bytes the caller sent count, whatever it claims. */
	len = min(len, p.len);
	if (len < offsetofend(struct ublk_params, types))
		return -EINVAL;
	if (len < sizeof(p))
		memset((char *)&p + len, 0, sizeof(p) - len);
	p.types &= UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
	p.len = sizeof(p);

	ret = unbd_validate_params(dev, &p);
	if (ret)
		return ret;

	mutex_lock(&dev->mutex);
	if (dev->disk || dev->started_once) {
		ret = -EACCES;
	} else {
		dev->params = p;
		ret = 0;
	}
	mutex_unlock(&dev->mutex);
	return ret;
}

static int unbd_ctrl_get_params(struct unbd_dev *dev,
				const struct ublksrv_ctrl_cmd *hdr)
{
	struct ublk_params p;
	u32 len;

	if (hdr->len < offsetofend(struct ublk_params, types) || !hdr->addr)
		return -EINVAL;
	mutex_lock(&dev->mutex);
	p = dev->params;
	mutex_unlock(&dev->mutex);
	p.len = sizeof(p);
	len = min_t(u32, hdr->len, sizeof(p));
	if (copy_to_user(u64_to_user_ptr(hdr->addr), &p, len))
		return -EFAULT;
	return 0;
}

static int unbd_ctrl_get_affinity(struct unbd_dev *dev,
				  const struct ublksrv_ctrl_cmd *hdr)
{
	const struct blk_mq_queue_map *map =
		&dev->tag_set.map[HCTX_TYPE_DEFAULT];
	cpumask_var_t mask;
	unsigned int cpu;
	u32 len;
	int ret = 0;

	if (hdr->queue_id >= dev->info.nr_hw_queues || !hdr->addr)
		return -EINVAL;
	if ((u64)hdr->len * BITS_PER_BYTE < nr_cpu_ids ||
	    hdr->len % sizeof(unsigned long))
		return -EINVAL;
	if (!zalloc_cpumask_var(&mask, GFP_KERNEL))
		return -ENOMEM;
	for_each_possible_cpu(cpu)
		if (map->mq_map[cpu] == hdr->queue_id)
			cpumask_set_cpu(cpu, mask);
	len = min_t(u32, hdr->len, cpumask_size());
	if (copy_to_user(u64_to_user_ptr(hdr->addr), cpumask_bits(mask), len))
		ret = -EFAULT;
	free_cpumask_var(mask);
	return ret;
}

static int unbd_ctrl_start_recovery(struct unbd_dev *dev)
{
	int ret = 0;

	if (!unbd_recovery(dev))
		return -EINVAL;
	mutex_lock(&dev->mutex);
	if (!dev->disk || dev->stopping ||
	    dev->info.state != UBLK_S_DEV_QUIESCED || dev->recovering) {
		ret = -EBUSY;
		goto out;
	}
	/* Every command of the old server must be gone with its file. */
	if (!unbd_all_queues_dead(dev) || test_bit(0, &dev->cdev_busy)) {
		ret = -EBUSY;
		goto out;
	}
	unbd_queues_reset(dev);
	dev->recovering = true;
	unbd_set_state(dev, UBLK_S_DEV_QUIESCED, -1);
	dev_info(&dev->cdev_dev, "recovery started\n");
out:
	mutex_unlock(&dev->mutex);
	return ret;
}

static bool unbd_recovery_settled(struct unbd_dev *dev)
{
	return !READ_ONCE(dev->recovering) || unbd_any_queue_dead(dev) ||
	       unbd_all_queues_ready(dev);
}

static int unbd_ctrl_end_recovery(struct unbd_dev *dev,
				  const struct ublksrv_ctrl_cmd *hdr)
{
	int pid = (int)hdr->data[0];
	int ret = 0;

	if (!unbd_recovery(dev) || pid <= 0)
		return -EINVAL;
	if (!READ_ONCE(dev->recovering))
		return -EBUSY;
	if (wait_event_interruptible(dev->waitq, unbd_recovery_settled(dev)))
		return -EINTR;

	mutex_lock(&dev->mutex);
	if (!dev->recovering || !dev->disk || dev->stopping) {
		ret = -EBUSY;
		goto out;
	}
	if (!unbd_all_queues_ready(dev)) {
		ret = -ENODEV;
		goto out;
	}
	unbd_set_state(dev, UBLK_S_DEV_LIVE, pid);
	dev->recovering = false;
	if (dev->quiesced) {
		blk_mq_unquiesce_queue(dev->disk->queue);
		dev->quiesced = false;
	}
	blk_mq_kick_requeue_list(dev->disk->queue);
	dev_info(&dev->cdev_dev, "recovered, server pid %d\n", pid);
out:
	mutex_unlock(&dev->mutex);
	return ret;
}

static int unbd_ctrl_uring_cmd(struct io_uring_cmd *cmd,
			       unsigned int issue_flags)
{
	struct ublksrv_ctrl_cmd hdr;
	const struct unbd_dev *deleted;
	struct unbd_dev *dev;
	int ret;

	/* struct ublksrv_ctrl_cmd does not fit in a 64-byte SQE. */
	if (!(issue_flags & IO_URING_F_SQE128))
		return -EINVAL;
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	memcpy(&hdr, cmd->cmd, sizeof(hdr));

	if (cmd->cmd_op == UBLK_CMD_ADD_DEV)
		return unbd_ctrl_add(&hdr);

	dev = unbd_dev_get(hdr.dev_id);
	if (!dev)
		return -ENODEV;
	deleted = dev;

	switch (cmd->cmd_op) {
	case UBLK_CMD_DEL_DEV:
		ret = unbd_ctrl_del(dev);
		break;
	case UBLK_CMD_START_DEV:
		ret = unbd_ctrl_start(dev, &hdr);
		break;
	case UBLK_CMD_STOP_DEV:
		ret = unbd_ctrl_stop(dev);
		break;
	case UBLK_CMD_GET_DEV_INFO:
		ret = unbd_ctrl_get_info(dev, &hdr);
		break;
	case UBLK_CMD_SET_PARAMS:
		ret = unbd_ctrl_set_params(dev, &hdr);
		break;
	case UBLK_CMD_GET_PARAMS:
		ret = unbd_ctrl_get_params(dev, &hdr);
		break;
	case UBLK_CMD_GET_QUEUE_AFFINITY:
		ret = unbd_ctrl_get_affinity(dev, &hdr);
		break;
	case UBLK_CMD_START_USER_RECOVERY:
		ret = unbd_ctrl_start_recovery(dev);
		break;
	case UBLK_CMD_END_USER_RECOVERY:
		ret = unbd_ctrl_end_recovery(dev, &hdr);
		break;
	default:
		ret = -EOPNOTSUPP;
		break;
	}
	unbd_dev_put(dev);

	/* DEL_DEV returns once the device is really gone, like upstream. */
	if (cmd->cmd_op == UBLK_CMD_DEL_DEV && !ret &&
	    wait_event_interruptible(unbd_release_wq,
				     unbd_dev_released(hdr.dev_id, deleted)))
		ret = -EINTR;
	return ret;
}

static const struct file_operations unbd_ctrl_fops = {
	.owner		= THIS_MODULE,
	.open		= nonseekable_open,
	.uring_cmd	= unbd_ctrl_uring_cmd,
	.llseek		= noop_llseek,
};

static struct miscdevice unbd_ctrl_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "ublk-control",
	.fops	= &unbd_ctrl_fops,
};

int unbd_ctrl_init(void)
{
	int ret;

	ret = alloc_chrdev_region(&unbd_cdev_base, 0, UNBD_MAX_DEVS,
				  "ublk-char");
	if (ret)
		return ret;
	unbd_class = class_create(THIS_MODULE, "ublk-char");
	if (IS_ERR(unbd_class)) {
		ret = PTR_ERR(unbd_class);
		goto free_region;
	}
	ret = misc_register(&unbd_ctrl_misc);
	if (ret)
		goto destroy_class;
	return 0;

destroy_class:
	class_destroy(unbd_class);
free_region:
	unregister_chrdev_region(unbd_cdev_base, UNBD_MAX_DEVS);
	return ret;
}

void unbd_ctrl_exit(void)
{
	struct unbd_dev *dev;
	int id;

	misc_deregister(&unbd_ctrl_misc);

	/* No file of ours is open (they pin the module): drop what is left */
	for (;;) {
		id = 0;
		spin_lock(&unbd_idr_lock);
		dev = idr_get_next(&unbd_idr, &id);
		while (dev && READ_ONCE(dev->deleting)) {
			id++;
			dev = idr_get_next(&unbd_idr, &id);
		}
		if (dev)
			get_device(&dev->cdev_dev);
		spin_unlock(&unbd_idr_lock);
		if (!dev)
			break;
		unbd_ctrl_del(dev);
		unbd_dev_put(dev);
	}
	wait_event(unbd_release_wq, idr_is_empty(&unbd_idr));
	idr_destroy(&unbd_idr);
	class_destroy(unbd_class);
	unregister_chrdev_region(unbd_cdev_base, UNBD_MAX_DEVS);
}
